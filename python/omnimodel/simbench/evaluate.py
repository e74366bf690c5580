"""Evaluate a policy: closed loop in Meta-World, and open loop on held-out episodes.

Closed loop (:func:`evaluate_closed_loop`): for each task, K episodes with env seeds
``seed + SPLIT_SEED_OFFSETS["eval"] + k`` (disjoint from the demonstrations). Each episode: reset, then
repeatedly ask the policy for an action chunk and execute its first ``execute_steps`` actions (default:
the whole chunk, as OFT's LIBERO evaluation does) until Meta-World reports success or the task's step
budget runs out. Reported: success per task and the mean over tasks.

Open loop (:func:`evaluate_open_loop`): on stored episodes, at every ``stride``-th step, the predicted
chunk against the recorded actions of the following steps (mean absolute error, in action units), and,
given a ``reference`` policy (the full-precision one), L1 and cosine similarity between the two chunks.

Determinism: simulator resets are seeded, MuJoCo and the scripted policies are deterministic, and the
policies are run single-threaded, so the same command gives the same numbers. Timings are kept apart
(``timing``) because they do not repeat; :func:`deterministic_view` drops them for comparison.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from omnimodel.errors import OmnimodelError, UsageError
from omnimodel.validate.compare import cosine

from .collect import SPLIT_SEED_OFFSETS, split_seed
from .confidence import format_rate, format_ratio, wilson_interval
from .episodes import Episode
from .policies import describe_policy
from .progress import progress_bar
from .tasks import DEFAULT_TASKS, parse_tasks

RESULT_SCHEMA = "omnimodel-eval"
RESULT_VERSION = 1
ACTION_DIM = 4  # Meta-World


class PolicyOutputError(OmnimodelError, ValueError):
    """The policy returned something that is not an action chunk for this simulator."""


def _as_chunk(raw: Any, action_dim: int) -> np.ndarray:
    chunk = np.asarray(raw, dtype=np.float64)
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != action_dim:
        raise PolicyOutputError(f"expected an action chunk (k, {action_dim}), got shape {chunk.shape}")
    if not np.isfinite(chunk).all():
        raise PolicyOutputError("the policy returned NaN or Inf actions")
    return chunk


# --------------------------------------------------------------------------------------------------
# Closed loop
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedLoopConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    episodes_per_task: int = 10
    seed: int = 0
    max_steps: int | None = None  # None: each task's own budget
    execute_steps: int | None = None  # actions run per policy call; None: the whole chunk
    image_size: int = 84
    proprio: tuple[str, ...] | None = None  # the state the policy gets (sim.SimConfig.proprio); None: default


@dataclass
class EpisodeOutcome:
    seed: int
    success: bool
    steps: int
    policy_calls: int
    policy_seconds: float = field(default=0.0, repr=False)


def run_episode(
    sim: Any, policy: Any, seed: int, *, max_steps: int, execute_steps: int | None = None
) -> EpisodeOutcome:
    """One closed-loop episode in an open ``MetaWorldSim``."""
    obs = sim.reset(seed)
    begin = getattr(policy, "begin_episode", None)
    if callable(begin):
        begin(sim)
    steps = calls = 0
    success = False
    policy_s = 0.0
    instruction = sim.task.instruction
    while steps < max_steps and not success:
        t0 = time.perf_counter()
        chunk = _as_chunk(policy(list(obs.images), instruction, obs.proprio), ACTION_DIM)
        policy_s += time.perf_counter() - t0
        calls += 1
        n = len(chunk) if execute_steps is None else max(1, min(int(execute_steps), len(chunk)))
        for action in chunk[:n]:
            result = sim.step(action)
            steps += 1
            obs = result.observation
            if result.success:
                success = True
                break
            if steps >= max_steps:
                break
    return EpisodeOutcome(int(seed), success, steps, calls, policy_s)


def evaluate_closed_loop(
    policy: Any, config: ClosedLoopConfig | None = None, *, progress: bool = True
) -> dict[str, Any]:
    from .sim import MetaWorldSim, SimConfig

    cfg = config or ClosedLoopConfig()
    if cfg.episodes_per_task < 1:
        raise ValueError("episodes_per_task must be >= 1")
    tasks = parse_tasks(cfg.tasks)
    restart_noise(policy)
    per_task: dict[str, Any] = {}
    policy_seconds = 0.0
    calls = 0
    t_start = time.perf_counter()
    render_backend = ""
    with progress_bar(cfg.episodes_per_task * len(tasks), "closed loop", enabled=progress) as bar:
        for task in tasks:
            max_steps = cfg.max_steps or task.max_steps
            outcomes: list[EpisodeOutcome] = []
            sim_cfg = SimConfig(image_size=cfg.image_size) if cfg.proprio is None else SimConfig(
                image_size=cfg.image_size, proprio=tuple(cfg.proprio)
            )
            with MetaWorldSim(task, sim_cfg) as sim:
                render_backend = sim.render_backend
                for k in range(cfg.episodes_per_task):
                    out = run_episode(
                        sim,
                        policy,
                        split_seed(cfg.seed, "eval", k),
                        max_steps=max_steps,
                        execute_steps=cfg.execute_steps,
                    )
                    outcomes.append(out)
                    policy_seconds += out.policy_seconds
                    calls += out.policy_calls
                    bar.update(1)
                    ok = sum(o.success for o in outcomes)
                    bar.set_postfix_str(f"{task.name} {ok}/{len(outcomes)}")
            successes = sum(o.success for o in outcomes)
            per_task[task.name] = {
                "instruction": task.instruction,
                "episodes": len(outcomes),
                "successes": successes,
                "success_rate": successes / len(outcomes),
                "success_ci95": list(wilson_interval(successes, len(outcomes))),
                "mean_steps": float(np.mean([o.steps for o in outcomes])),
                "max_steps": max_steps,
                "per_episode": [
                    {"seed": o.seed, "success": o.success, "steps": o.steps, "policy_calls": o.policy_calls}
                    for o in outcomes
                ],
            }
    wall = time.perf_counter() - t_start
    successes = sum(r["successes"] for r in per_task.values())
    episodes = sum(r["episodes"] for r in per_task.values())
    return {
        "config": {**asdict(cfg), "tasks": [t.name for t in tasks], "seed_offset": SPLIT_SEED_OFFSETS["eval"]},
        "render_backend": render_backend,
        "tasks": per_task,
        # every task runs the same number of episodes, so the mean of the task rates is the pooled rate
        "average_success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
        "successes": successes,
        "episodes": episodes,
        "success_ci95": list(wilson_interval(successes, episodes)),
        "timing": {
            "seconds": round(wall, 3),
            "policy_calls": calls,
            "policy_ms_per_call": round(1e3 * policy_seconds / max(calls, 1), 3),
        },
    }


# --------------------------------------------------------------------------------------------------
# Open loop
# --------------------------------------------------------------------------------------------------


@dataclass
class _Accumulator:
    """Sums for one group (a task, or everything)."""

    samples: int = 0
    gt_abs: np.ndarray | None = None  # per action dimension
    gt_count: int = 0  # compared time steps
    ref_abs: float = 0.0
    ref_count: int = 0
    cosines: list[float] = field(default_factory=list)

    def add_ground_truth(self, err: np.ndarray) -> None:
        s = np.abs(err).sum(axis=0)
        self.gt_abs = s if self.gt_abs is None else self.gt_abs + s
        self.gt_count += err.shape[0]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples}
        if self.gt_abs is not None:
            per_dim = self.gt_abs / self.gt_count
            out["l1_to_ground_truth"] = float(per_dim.mean())
            out["l1_to_ground_truth_per_dim"] = per_dim.tolist()
        if self.ref_count:
            out["l1_to_reference"] = self.ref_abs / self.ref_count
            out["cosine_to_reference"] = float(np.mean(self.cosines))
            out["cosine_to_reference_min"] = float(np.min(self.cosines))
        return out


def restart_noise(*policies: Any) -> None:
    """A flow-matching policy draws its noise from a per-call seed (call k: seed k). Each evaluation pass
    restarts the count, so the open loop after a closed loop, and the reference beside the policy, query
    with the same seeds: the L1 to the reference then measures the policies' difference, not two noise
    draws (for a deterministic policy this changes nothing)."""
    for who in policies:
        restart = getattr(who, "restart_noise", None)
        if callable(restart):
            restart()


def evaluate_open_loop(
    policy: Any,
    episodes: Iterable[Episode],
    *,
    reference: Any | None = None,
    stride: int | None = None,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, Any]:
    """Predicted chunks vs recorded actions (and vs ``reference``'s chunks) on stored episodes.

    ``stride``: steps between queries; None = the policy's chunk length (non-overlapping chunks).
    """
    for who in (policy, reference):
        if getattr(who, "privileged", False):
            raise UsageError(
                f"{describe_policy(who).get('kind')} is privileged (it reads the simulator's state), so it "
                "cannot be scored on stored episodes; use it in closed loop only"
            )
    restart_noise(policy, reference)
    overall = _Accumulator()
    groups: dict[str, _Accumulator] = {}
    n_episodes = 0
    policy_s = 0.0
    with progress_bar(total or 0, "open loop", enabled=progress) as bar:
        for ep in episodes:
            n_episodes += 1
            acc = groups.setdefault(ep.task or ep.instruction, _Accumulator())
            t = 0
            while t < ep.num_steps:
                images, proprio = ep.observation(t)
                t0 = time.perf_counter()
                pred = _as_chunk(policy(images, ep.instruction, proprio), ep.actions.shape[1])
                policy_s += time.perf_counter() - t0
                gt = ep.actions[t : t + len(pred)].astype(np.float64)
                err = pred[: len(gt)] - gt
                for a in (acc, overall):
                    a.samples += 1
                    a.add_ground_truth(err)
                if reference is not None:
                    ref = _as_chunk(reference(images, ep.instruction, proprio), ep.actions.shape[1])
                    if ref.shape != pred.shape:
                        raise PolicyOutputError(f"policy chunk {pred.shape} vs reference chunk {ref.shape}")
                    l1 = float(np.abs(pred - ref).sum())
                    cos = cosine(pred, ref)
                    for a in (acc, overall):
                        a.ref_abs += l1
                        a.ref_count += pred.size
                        a.cosines.append(cos)
                t += int(stride or len(pred))
            bar.update(1)
    if n_episodes == 0:
        raise ValueError("no episodes for the open-loop evaluation")
    return {
        "episodes": n_episodes,
        "stride": stride,
        **overall.summary(),
        "tasks": {name: g.summary() for name, g in sorted(groups.items())},
        "timing": {"policy_ms_per_call": round(1e3 * policy_s / max(overall.samples, 1), 3)},
    }


# --------------------------------------------------------------------------------------------------
# The result document
# --------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import omnimodel

    out = {"omnimodel": omnimodel.__version__}
    for pkg in ("metaworld", "mujoco", "torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def make_result(
    policy: Any,
    *,
    closed_loop: dict[str, Any] | None,
    open_loop: dict[str, Any] | None,
    reference: Any | None = None,
    open_loop_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "version": RESULT_VERSION,
        "policy": describe_policy(policy),
        "reference": describe_policy(reference) if reference is not None else None,
        "versions": _versions(),
        "closed_loop": closed_loop,
        "open_loop": None if open_loop is None else {**(open_loop_source or {}), **open_loop},
    }


def deterministic_view(result: Any) -> Any:
    """The result without its wall-clock fields (every ``timing``), for comparing runs."""
    if isinstance(result, dict):
        return {k: deterministic_view(v) for k, v in result.items() if k not in ("timing",)}
    if isinstance(result, list):
        return [deterministic_view(v) for v in result]
    return result


def format_result(result: dict[str, Any]) -> str:
    """Human-readable summary of a result document."""
    pol = result["policy"]
    lines = [f"policy: {pol.get('kind')} {pol.get('checkpoint') or pol.get('gguf') or ''}".rstrip()]
    cl = result.get("closed_loop")
    if cl:
        lines.append(
            f"closed loop ({cl['config']['episodes_per_task']} episodes per task, seed {cl['config']['seed']}):"
        )
        lines.append(f"  {'task':<22} {'success':>8} {'mean steps':>11}   rate [95% interval]")
        for name, r in cl["tasks"].items():
            lines.append(f"  {name:<22} {r['successes']:>3}/{r['episodes']:<4} {r['mean_steps']:>11.1f}   "
                         f"{format_rate(r['successes'], r['episodes'])}")
        if "episodes" in cl:
            lines.append(f"  {'average':<22} {cl['successes']:>3}/{cl['episodes']:<4} {'':>11}   "
                         f"{format_rate(cl['successes'], cl['episodes'])}")
        else:  # a result written before intervals were recorded
            lines.append(f"  {'average':<22} {cl['average_success_rate']:>8.1%}")
    ret = result.get("retention")
    if ret:
        ratio = format_ratio(ret["ratio"], ret.get("ci95"), "undefined (the baseline never succeeded)")
        if ret["ratio"] is not None and not ret.get("ci95"):
            ratio += " (no interval)"
        lines.append(f"retention vs {ret['baseline']}: {ratio} over {ret['episodes']} paired episodes "
                     f"(both {ret['both']}, only this policy {ret['only_candidate']}, only the baseline "
                     f"{ret['only_baseline']})")
        for name, t in ret.get("per_task", {}).items():
            t_ratio = format_ratio(t["ratio"], t.get("ci95"))
            lines.append(f"  {name:<22} {t['candidate']:>3} vs {t['baseline']:<3} of {t['episodes']:<4} {t_ratio}")
    ol = result.get("open_loop")
    if ol:
        lines.append(f"open loop ({ol['episodes']} held-out episodes, {ol['samples']} chunks):")
        lines.append(f"  L1 to ground truth   {ol['l1_to_ground_truth']:.5f}")
        if "l1_to_reference" in ol:
            lines.append(f"  L1 to reference      {ol['l1_to_reference']:.5f}")
            lines.append(
                f"  cosine to reference  {ol['cosine_to_reference']:.6f} (min {ol['cosine_to_reference_min']:.6f})"
            )
    return "\n".join(lines)


__all__: Sequence[str] = (
    "RESULT_SCHEMA",
    "PolicyOutputError",
    "ClosedLoopConfig",
    "EpisodeOutcome",
    "run_episode",
    "evaluate_closed_loop",
    "evaluate_open_loop",
    "make_result",
    "deterministic_view",
    "format_result",
)
