"""Confidence intervals for closed-loop success rates and for retention ratios between two policies.

A success rate from n episodes is a binomial proportion: its interval is Wilson's score interval, which
stays inside [0, 1] and keeps its coverage at 0/n and n/n, where the normal approximation collapses to a
point. Every configuration of ``omnimodel eval`` runs the same episode seeds (``split_seed(seed, "eval",
k)`` per task), so two results are *paired*: episode k of task t starts from the same layout in both. The
retention ratio (candidate success / baseline success) gets a paired, task-stratified bootstrap interval:
resample episode indices within each task, the same indices for both policies, and take percentiles of
the ratio of pooled successes. Pairing removes the layout-to-layout variance both policies share, which
is most of it when the candidate is a quantization of the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, episodes: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for ``successes`` out of ``episodes`` (95% by default)."""
    if episodes < 1 or not 0 <= successes <= episodes:
        raise ValueError(f"need 0 <= successes <= episodes and episodes >= 1, got {successes}/{episodes}")
    n, p = float(episodes), successes / episodes
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


class PairingError(ValueError):
    """Two closed-loop results that did not run the same tasks with the same episode seeds."""


@dataclass(frozen=True)
class Retention:
    ratio: float | None  # candidate / baseline success; None when the baseline never succeeded
    ci95: tuple[float, float] | None  # paired bootstrap percentile interval
    candidate_rate: float
    baseline_rate: float
    episodes: int  # paired episodes in all
    both: int  # episodes both policies succeeded on
    only_candidate: int
    only_baseline: int
    resamples: int
    seed: int
    # per task: ratio and its bootstrap interval from that task's own resamples (None where the baseline
    # never succeeded), candidate/baseline successes, episodes; says where a loss comes from
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return out


def _outcomes(closed_loop: Mapping[str, Any]) -> dict[str, dict[int, bool]]:
    try:
        return {task: {int(e["seed"]): bool(e["success"]) for e in r["per_episode"]}
                for task, r in closed_loop["tasks"].items()}
    except (KeyError, TypeError) as e:
        raise PairingError(f"not a closed-loop result with per-episode outcomes (missing {e})") from e


def paired_outcomes(candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per task, a (episodes, 2) bool array of (candidate, baseline) success on the same seed."""
    a, b = _outcomes(candidate), _outcomes(baseline)
    if set(a) != set(b):
        raise PairingError(f"the results ran different tasks: {sorted(a)} vs {sorted(b)}")
    out = {}
    for task in a:
        if set(a[task]) != set(b[task]):
            only = sorted(set(a[task]) ^ set(b[task]))[:3]
            raise PairingError(f"{task}: the results ran different episode seeds (e.g. {only}); evaluate both "
                               "with the same --seed and --episodes")
        seeds = sorted(a[task])
        out[task] = np.array([[a[task][s], b[task][s]] for s in seeds], dtype=bool)
    return out


def _ratio_interval(cand: int, base: int, cand_boot: np.ndarray,
                    base_boot: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
    """The ratio of successes and the percentile interval of its resamples (None without a baseline success)."""
    if base == 0:
        return None, None
    valid = base_boot > 0  # a resample without a baseline success has no ratio
    if not valid.any():
        return cand / base, None
    lo, hi = np.percentile(cand_boot[valid] / base_boot[valid], [2.5, 97.5])
    return cand / base, (float(lo), float(hi))


def _stratified_bootstrap(pairs: list[dict[str, np.ndarray]], resamples: int,
                          seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task, ``resamples`` bootstrap sums of the candidates' mean outcome and of the baseline's.
    Stratified (each task keeps its episode count) and paired: one draw of episodes serves every
    candidate and the baseline, since all ran the same seeds. ``pairs``: ``paired_outcomes`` per candidate."""
    rng = np.random.default_rng(seed)
    sums = {}
    for task in pairs[0]:
        c = np.stack([p[task][:, 0] for p in pairs], axis=1).astype(float)  # (episodes, candidates)
        b = pairs[0][task][:, 1].astype(float)
        idx = rng.integers(0, len(b), size=(resamples, len(b)))
        sums[task] = (c.mean(axis=1)[idx].sum(axis=1), b[idx].sum(axis=1))
    return sums


def paired_retention(candidate: Mapping[str, Any], baseline: Mapping[str, Any], *, resamples: int = 4000,
                     seed: int = 0) -> Retention:
    """Retention of ``candidate``'s closed-loop success relative to ``baseline``'s (both ``closed_loop``
    sections of eval results over the same seeds), with a paired, task-stratified bootstrap 95% interval."""
    pairs = paired_outcomes(candidate, baseline)
    stacked = np.concatenate(list(pairs.values()))
    cand, base = int(stacked[:, 0].sum()), int(stacked[:, 1].sum())
    n = len(stacked)
    boot = _stratified_bootstrap([pairs], resamples, seed)
    per_task = {}
    for task, outcomes in pairs.items():
        t_ratio, t_ci = _ratio_interval(int(outcomes[:, 0].sum()), int(outcomes[:, 1].sum()), *boot[task])
        per_task[task] = {"ratio": t_ratio, "ci95": list(t_ci) if t_ci else None,
                          "candidate": int(outcomes[:, 0].sum()), "baseline": int(outcomes[:, 1].sum()),
                          "episodes": len(outcomes)}
    cand_boot = sum(c for c, _ in boot.values())
    base_boot = sum(b for _, b in boot.values())
    ratio, ci = _ratio_interval(cand, base, cand_boot, base_boot)
    return Retention(
        ratio=ratio, ci95=ci, candidate_rate=cand / n, baseline_rate=base / n, episodes=n,
        both=int((stacked[:, 0] & stacked[:, 1]).sum()), only_candidate=int((stacked[:, 0] & ~stacked[:, 1]).sum()),
        only_baseline=int((~stacked[:, 0] & stacked[:, 1]).sum()), resamples=resamples, seed=seed,
        per_task=per_task,
    )


@dataclass(frozen=True)
class PooledRetention:
    """A method's retention averaged over several quantized models of it (e.g. calibration draws), each
    evaluated on the baseline's episodes: an episode counts the fraction of the models that succeeded."""

    ratio: float | None  # mean success over the models / baseline success; None without a baseline success
    ci95: tuple[float, float] | None
    rate: float  # mean success rate over the models
    rate_ci95: tuple[float, float]
    models: int
    successes: int  # summed over the models
    episodes: int  # per model


def pooled_retention(candidates: list[Mapping[str, Any]], baseline: Mapping[str, Any], *,
                     resamples: int = 4000, seed: int = 0) -> PooledRetention:
    """Retention of the mean of ``candidates`` (closed-loop sections over the baseline's seeds): the
    task-stratified bootstrap resamples episodes, each carrying every model's outcome on it and the
    baseline's, so the interval covers the episode layouts with the models' spread on each layout kept."""
    if not candidates:
        raise ValueError("pooled_retention needs at least one candidate")
    pairs = [paired_outcomes(c, baseline) for c in candidates]
    k = len(candidates)
    boot = _stratified_bootstrap(pairs, resamples, seed)
    cand_boot = sum(c for c, _ in boot.values())
    base_boot = sum(b for _, b in boot.values())
    cand = sum(int(p[task][:, 0].sum()) for p in pairs for task in p)
    base = sum(int(o[:, 1].sum()) for o in pairs[0].values())
    n = sum(len(o) for o in pairs[0].values())
    ratio, ci = _ratio_interval(cand, k * base, k * cand_boot, k * base_boot)
    lo, hi = np.percentile(cand_boot / n, [2.5, 97.5])
    return PooledRetention(ratio=ratio, ci95=ci, rate=cand / (k * n), rate_ci95=(float(lo), float(hi)),
                           models=k, successes=cand, episodes=n)


def format_rate(successes: int, episodes: int) -> str:
    """``"57.5% [42.2, 71.5]"``: the rate and its Wilson 95% interval, in percent."""
    lo, hi = wilson_interval(successes, episodes)
    return f"{successes / episodes:.1%} [{100 * lo:.1f}, {100 * hi:.1f}]"


def format_ratio(ratio: float | None, ci95: tuple[float, float] | list[float] | None,
                 undefined: str = "undefined") -> str:
    """``"95.1% [91.6, 98.6]"``: a retention ratio and its interval in percent; ``undefined`` when the
    baseline never succeeded (no ratio), no brackets when there is no interval."""
    if ratio is None:
        return undefined
    return f"{ratio:.1%}" + (f" [{100 * ci95[0]:.1f}, {100 * ci95[1]:.1f}]" if ci95 else "")


__all__ = [
    "PairingError",
    "PooledRetention",
    "Retention",
    "Z_95",
    "format_rate",
    "format_ratio",
    "paired_outcomes",
    "paired_retention",
    "pooled_retention",
    "wilson_interval",
]
