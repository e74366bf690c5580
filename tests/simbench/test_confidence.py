"""Confidence intervals on closed-loop success (Wilson) and on retention ratios (paired bootstrap)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omnimodel.simbench.confidence import (
    PairingError,
    format_rate,
    paired_outcomes,
    paired_retention,
    pooled_retention,
    wilson_interval,
)


def _closed_loop(outcomes: dict[str, list[bool]], seed0: int = 100) -> dict:
    """A closed-loop section as evaluate_closed_loop writes it (the fields these functions read)."""
    tasks = {}
    for task, wins in outcomes.items():
        tasks[task] = {
            "episodes": len(wins),
            "successes": sum(wins),
            "per_episode": [{"seed": seed0 + k, "success": w} for k, w in enumerate(wins)],
        }
    return {"tasks": tasks}


def test_wilson_textbook_values() -> None:
    # 0/10: the upper end is z^2 / (n + z^2); n/n mirrors it
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 3.8415 / 13.8415, abs=1e-4)
    # 50/100: close to the normal approximation 0.5 +- 0.098
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_wilson_narrows_with_episodes_and_holds_the_rate() -> None:
    widths = []
    for n in (20, 80, 320):
        k = int(0.75 * n)
        lo, hi = wilson_interval(k, n)
        assert lo < k / n < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert format_rate(15, 20).startswith("75.0% [")
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_retention_counts_and_interval() -> None:
    rng = np.random.default_rng(1)
    base = {t: list(rng.random(50) < 0.8) for t in ("push", "reach")}
    # the candidate loses a fifth of the baseline's successes and wins nothing new
    cand = {t: [w and (k % 5 != 0) for k, w in enumerate(ws)] for t, ws in base.items()}
    r = paired_retention(_closed_loop(cand), _closed_loop(base), resamples=2000)
    n_base = sum(map(sum, base.values()))
    n_cand = sum(map(sum, cand.values()))
    assert r.ratio == pytest.approx(n_cand / n_base)
    assert r.only_candidate == 0 and r.both == n_cand and r.only_baseline == n_base - n_cand
    assert r.episodes == 100
    lo, hi = r.ci95
    assert lo < r.ratio < hi <= 1.0  # never better than the baseline on any paired resample
    # identical results retain exactly 100% on every resample
    same = paired_retention(_closed_loop(base), _closed_loop(base), resamples=500)
    assert same.ratio == 1.0 and same.ci95 == (1.0, 1.0)
    # deterministic for a seed
    assert paired_retention(_closed_loop(cand), _closed_loop(base), resamples=2000).ci95 == r.ci95


def test_retention_per_task() -> None:
    base = {"push": [k % 4 != 0 for k in range(40)], "reach": [True] * 40, "door": [False] * 40}
    # push loses half its successes, reach none; door never succeeded in the baseline
    cand = {"push": [w and k % 2 == 0 for k, w in enumerate(base["push"])], "reach": [True] * 40,
            "door": [k < 3 for k in range(40)]}
    r = paired_retention(_closed_loop(cand), _closed_loop(base), resamples=1000)
    push, reach, door = r.per_task["push"], r.per_task["reach"], r.per_task["door"]
    assert (push["candidate"], push["baseline"], push["episodes"]) == (sum(cand["push"]), 30, 40)
    assert push["ratio"] == pytest.approx(sum(cand["push"]) / 30)
    assert push["ci95"][0] < push["ratio"] < push["ci95"][1] <= 1.0
    assert reach["ratio"] == 1.0 and reach["ci95"] == [1.0, 1.0]
    assert door["ratio"] is None and door["ci95"] is None and door["candidate"] == 3
    # the pooled ratio is over all tasks' successes, the per-task ones over each task's
    assert r.ratio == pytest.approx((sum(cand["push"]) + 40 + 3) / 70)
    assert json.loads(json.dumps(r.to_json()))["per_task"]["push"]["ratio"] == push["ratio"]


def test_pairing_beats_unpaired_noise() -> None:
    # when both policies fail on the same hard layouts, the paired interval is tighter than the ratio of
    # two independent Wilson intervals would suggest
    base = {"t": [k % 3 != 0 for k in range(90)]}
    cand = {"t": [k % 3 != 0 and k % 10 != 1 for k in range(90)]}
    r = paired_retention(_closed_loop(cand), _closed_loop(base))
    bl, bh = wilson_interval(sum(base["t"]), 90)
    cl, ch = wilson_interval(sum(cand["t"]), 90)
    assert r.ci95[1] - r.ci95[0] < ch / bl - cl / bh


def test_unpaired_results_are_refused() -> None:
    a = _closed_loop({"push": [True, False]})
    with pytest.raises(PairingError, match="different tasks"):
        paired_outcomes(a, _closed_loop({"reach": [True, False]}))
    with pytest.raises(PairingError, match="episode seeds"):
        paired_outcomes(a, _closed_loop({"push": [True, False]}, seed0=7))
    with pytest.raises(PairingError, match="per-episode"):
        paired_outcomes(a, {"tasks": {"push": {}}})


def test_pooled_retention_over_draws() -> None:
    """Three quantized models of one method: the pooled ratio is their mean success over the baseline's;
    a single model pools to its own paired retention; the interval narrows as draws agree."""
    base = _closed_loop({"a": [True] * 20, "b": [True] * 10 + [False] * 10})
    draws = [_closed_loop({"a": [k % m != 0 for k in range(20)], "b": [True] * 8 + [False] * 12})
             for m in (2, 4, 5)]
    pooled = pooled_retention(draws, base)
    each = [paired_retention(d, base) for d in draws]
    assert pooled.models == 3 and pooled.episodes == 40
    assert pooled.ratio == pytest.approx(np.mean([r.ratio for r in each]))
    assert pooled.rate == pytest.approx(np.mean([r.candidate_rate for r in each]))
    assert pooled.ci95[0] < pooled.ratio < pooled.ci95[1] and pooled.rate_ci95[0] < pooled.rate < pooled.rate_ci95[1]
    single = pooled_retention(draws[:1], base)
    assert single.ratio == pytest.approx(each[0].ratio)
    np.testing.assert_allclose(single.ci95, each[0].ci95)  # the same resamples as the paired interval
    with pytest.raises(PairingError, match="episode seeds"):
        pooled_retention([draws[0], _closed_loop({"a": [True] * 20, "b": [True] * 20}, seed0=7)], base)


def test_no_baseline_success_gives_no_ratio() -> None:
    r = paired_retention(_closed_loop({"t": [True, False]}), _closed_loop({"t": [False, False]}))
    assert r.ratio is None and r.ci95 is None and r.candidate_rate == 0.5


@pytest.mark.usefixtures("rendering")
def test_eval_cli_intervals_and_baseline(tmp_path: Path, capsys) -> None:
    from omnimodel.cli.main import main

    first = tmp_path / "expert.json"
    argv = ["eval", "--policy", "expert", "--tasks", "reach", "--episodes", "2", "--max-steps", "30", "--quiet"]
    assert main([*argv, "--json", str(first)]) == 0
    result = json.loads(first.read_text())["closed_loop"]
    k, n = result["successes"], result["episodes"]
    assert n == 2 and result["success_ci95"] == list(wilson_interval(k, n))
    assert result["tasks"]["reach"]["success_ci95"] == list(wilson_interval(k, n))
    capsys.readouterr()

    second = tmp_path / "again.json"
    assert main([*argv, "--json", str(second), "--baseline", str(first)]) == 0
    printed = capsys.readouterr().out
    retention = json.loads(second.read_text())["retention"]
    if k:  # the same deterministic expert retains all of itself
        assert retention["ratio"] == 1.0 and "retention vs" in printed
    assert retention["only_candidate"] == 0 and retention["only_baseline"] == 0
    assert retention["per_task"]["reach"]["candidate"] == retention["per_task"]["reach"]["baseline"] == k
    assert any(line.split()[:1] == ["reach"] and " vs " in line for line in printed.splitlines())

    # a baseline over other seeds is refused before the run, in one line
    assert main([*argv, "--seed", "3", "--baseline", str(first)]) == 2
    assert "same episodes" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main([*argv, "--baseline", str(bad)]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_format_ratio() -> None:
    """One formatter for retention in eval's text and the report tables."""
    from omnimodel.simbench.confidence import format_ratio

    assert format_ratio(0.951, (0.916, 0.986)) == "95.1% [91.6, 98.6]"
    assert format_ratio(1.0, None) == "100.0%"
    assert format_ratio(None, None) == "undefined" and format_ratio(None, (0, 1), "-") == "-"
