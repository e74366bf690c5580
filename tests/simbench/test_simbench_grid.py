"""benchmarks/simbench_grid.py: the grid's configurations and its Markdown table from eval JSONs (the
runs themselves are the benchmark's, minutes each)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from omnimodel.simbench.confidence import paired_retention, wilson_interval

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "simbench_grid.py"


def _load():
    spec = importlib.util.spec_from_file_location("simbench_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(module)
    return module


def _closed_loop(outcomes: dict[str, list[bool]]) -> dict:
    tasks = {}
    for task, wins in outcomes.items():
        tasks[task] = {"episodes": len(wins), "successes": sum(wins),
                       "per_episode": [{"seed": 2_000_000 + k, "success": w} for k, w in enumerate(wins)]}
    k, n = sum(map(sum, outcomes.values())), sum(map(len, outcomes.values()))
    return {"tasks": tasks, "successes": k, "episodes": n, "success_ci95": list(wilson_interval(k, n)),
            "config": {"episodes_per_task": 4, "seed": 0}}


def test_grid_order_and_table(tmp_path: Path) -> None:
    g = _load()
    configs = g.grid(["actquant", "rtn"], [3.0, 2.5])
    assert [c.key for c in configs] == ["fp", "actquant-3", "rtn-3", "actquant-2.5", "rtn-2.5"]
    assert configs[0].method is None

    fp = _closed_loop({"push": [True, True, True, False], "reach": [True] * 4})
    rtn = _closed_loop({"push": [True, False, False, False], "reach": [True] * 4})
    (tmp_path / "fp.json").write_text(json.dumps({"closed_loop": fp, "grid": {"key": "fp"}}))
    retention = paired_retention(rtn, fp, resamples=200).to_json()
    (tmp_path / "rtn-3.json").write_text(json.dumps(
        {"closed_loop": rtn, "retention": retention, "grid": {"key": "rtn-3", "vision_llm_bpw": 3.01}}))

    text = g.table(tmp_path, configs)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].split(" | ")[4:] == ["push", "reach |"]
    assert len(rows) == 3  # header, fp, rtn-3: configurations without a result are left out
    fp_row, rtn_row = rows[1], rows[2]
    lo, hi = wilson_interval(7, 8)
    assert "7/8 = 87.5 %" in fp_row and f"[{100 * lo:.1f}, {100 * hi:.1f}]" in fp_row and "(baseline)" in fp_row
    ci = retention["ci95"]
    assert rtn_row.startswith("| rtn 3 | 3.01 | 5/8 = 62.5 %")
    assert f"{100 * 5 / 7:.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" in rtn_row
    assert rtn_row.endswith("| 1/4 | 4/4 |")
    assert "paired" in text and "Wilson" in text
    assert g.table(tmp_path / "none", configs).startswith("(no configuration")
