"""benchmarks/actquant_eval.py and its report: the configurations, the commands each one runs (paired seeds,
the closed-loop-only mode) and the Markdown tables from eval JSONs. The runs themselves are the benchmark's
(minutes each); here ``subprocess.run`` is replaced by a recorder that writes what ``omnimodel`` would."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnimodel.simbench.confidence import paired_retention, pooled_retention, wilson_interval

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:  # actquant_report imports its sibling by name
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(module)
    return module


def _closed_loop(outcomes: dict[str, list[bool]], seed: int = 0) -> dict:
    tasks = {}
    for task, wins in outcomes.items():
        tasks[task] = {"episodes": len(wins), "successes": sum(wins),
                       "per_episode": [{"seed": 2_000_000 + k, "success": w} for k, w in enumerate(wins)]}
    k, n = sum(map(sum, outcomes.values())), sum(map(len, outcomes.values()))
    return {"tasks": tasks, "successes": k, "episodes": n, "average_success_rate": k / n,
            "success_ci95": list(wilson_interval(k, n)), "config": {"episodes_per_task": 4, "seed": seed}}


def test_grid_order_and_only() -> None:
    g = _load("actquant_eval")
    configs = g.grid_configs(["actquant", "rtn"], [3.0, 2.5])
    assert [c.key for c in configs] == ["fp32", "actquant-3", "rtn-3", "actquant-2.5", "rtn-2.5"]
    assert configs[0].method is None
    assert [c.key for c in g.select(configs, "fp32,rtn-2.5")] == ["fp32", "rtn-2.5"]
    assert g.select(configs, None) == configs
    with pytest.raises(SystemExit, match="unknown configuration.*rtn-4"):
        g.select(configs, "fp32,rtn-4")
    # a "+bc" method is the method with --bias-correction, in its own directory
    bc = g.grid_configs(["actquant+bc"], [2.5])[1]
    assert (bc.key, bc.method, bc.flags) == ("actquant+bc-2.5", "actquant", ("--bias-correction",))
    # "+enc" allocates with the encoder error model; variants combine, flags in the order written
    enc, both = g.grid_configs(["actquant+enc", "rtn+enc+bc"], [3.0])[1:]
    assert (enc.key, enc.method, enc.flags) == ("actquant+enc-3", "actquant", ("--error-model", "encoder"))
    assert (both.key, both.method) == ("rtn+enc+bc-3", "rtn")
    draw = g.grid_configs(["actquant+s1"], [2.5])[1]
    assert (draw.key, draw.method, draw.flags) == ("actquant+s1-2.5", "actquant", ("--calib-seed", "1"))
    assert both.flags == ("--error-model", "encoder", "--bias-correction")
    assert both.label == "rtn + encoder-measured error model + bias correction"
    assert g.method_config("rtn", 2.0).flags == ()
    nohsic = g.method_config("actquant+nohsic+s1", 2.5)
    assert (nohsic.key, nohsic.method, nohsic.flags) == ("actquant+nohsic+s1-2.5", "actquant",
                                                         ("--no-hsic", "--calib-seed", "1"))
    # ablation steps that are grid rows share the grid's directories, so they run once
    keys = [c.key for c in g.ablation_configs([2.5])]
    assert keys == ["ablation0-2.5", "ablation1-2.5", "actquant+nohsic+lam1-2.5", "actquant+nohsic-2.5",
                    "actquant-2.5", "ablation5-2.5"]
    lam1 = g.method_config("actquant+nohsic+lam1", 2.5)
    assert lam1.flags == ("--no-hsic", "--lambda", "1")
    assert lam1.label == "actquant + no HSIC in the allocation + lambda 1 (action-only Fisher)"
    tau = g.method_config("actquant+tau2+s1", 2.5)
    assert (tau.key, tau.flags) == ("actquant+tau2+s1-2.5", ("--hsic-tau", "2", "--calib-seed", "1"))
    assert tau.label == "actquant + HSIC weights at tau 2 + calibration draw 1"


def test_commands_share_seed_and_episodes(tmp_path: Path, monkeypatch) -> None:
    """Every configuration's eval gets the same --seed/--episodes; --closed-loop-only drops the held-out data
    and the reference; a quantized row converts the subject's checkpoint with its calibration options."""
    g = _load("actquant_eval")
    ran: list[list[str]] = []

    def fake_run(cmd, stdout=None, stderr=None, **kw):
        ran.append(cmd)
        args = cmd[cmd.index("omnimodel.cli.main") + 1:]
        if args[0] == "convert":
            model = Path(args[args.index("--out") + 1])
            model.mkdir(parents=True)
            (model / "quant_report.json").write_text(json.dumps({"vision_llm_bpw": 3.0}))
            (model / "validation_report.json").write_text(json.dumps({"passed": True, "min_cosine": 0.9999}))
        else:
            Path(args[args.index("--json") + 1]).write_text(json.dumps(
                {"closed_loop": _closed_loop({"push": [True, False]}, seed=int(args[args.index("--seed") + 1]))}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(g.subprocess, "run", fake_run)
    sub = g.Subject("openvla-oft", tmp_path / "ckpt", ("--checkpoint", str(tmp_path / "ckpt"), "--calib", "D"), 56,
                    ("push",))
    opts = g.EvalOptions(episodes=7, seed=5, open_loop=False, calib_episodes=18)
    for c in g.grid_configs(["rtn"], [3.0]):
        out = g.run_config(c, sub, tmp_path / "runs", None, opts)
        assert out["eval"]["closed_loop"]["config"]["seed"] == 5
        assert (tmp_path / "runs" / c.key / "eval.json").is_file()
    evals = [c for c in ran if "eval" in c]
    assert len(evals) == 2 and len(ran) == 3
    for cmd in evals:
        assert cmd[cmd.index("--seed") + 1] == "5" and cmd[cmd.index("--episodes") + 1] == "7"
        assert "--data" not in cmd and "--reference" not in cmd
        assert cmd[cmd.index("--tasks") + 1] == "push"
    convert = next(c for c in ran if "convert" in c)
    assert convert[convert.index("--calib-episodes") + 1] == "18"
    assert convert[convert.index("--checkpoint") + 1] == str(tmp_path / "ckpt")
    assert evals[1][evals[1].index("--policy") + 1] == str(tmp_path / "runs" / "rtn-3" / "model")

    # a configuration whose eval.json exists is not run again (an interrupted grid resumes)
    ran.clear()
    g.run_config(g.grid_configs(["rtn"], [3.0])[1], sub, tmp_path / "runs", None, opts)
    assert ran == []

    # with held-out data the open loop is measured against the full-precision checkpoint
    g.run_config(g.Config("fp32b", None, None), sub, tmp_path / "runs", tmp_path / "heldout",
                 g.EvalOptions(episodes=7, seed=5))
    assert ran[0][ran[0].index("--data") + 1] == str(tmp_path / "heldout")
    assert ran[0][ran[0].index("--reference") + 1] == str(tmp_path / "ckpt")


def test_report_table_and_block(tmp_path: Path) -> None:
    _load("actquant_eval")
    r = _load("actquant_report")
    fp = _closed_loop({"push": [True, True, True, False], "reach": [True] * 4}, seed=3)
    rtn = _closed_loop({"push": [True, False, False, False], "reach": [True] * 4}, seed=3)
    for key, cl, method, bpw, flags in (("fp32", fp, None, None, []), ("rtn-3", rtn, "rtn", 3.0, []),
                                        ("rtn+bc-3", rtn, "rtn", 3.0, ["--bias-correction"])):
        (tmp_path / key).mkdir()
        doc = {"config": {"key": key, "method": method, "bpw": bpw, "arch": "openvla-oft", "flags": flags,
                          "label": "rtn + bias correction" if flags else method},
               "eval": {"closed_loop": cl}, "quant": {"vision_llm_bpw": 3.01}, "parity": {"min_cosine": 0.99991}}
        (tmp_path / key / "eval.json").write_text(json.dumps(doc))
    rows = [line for line in r.main_table(r.load_runs(tmp_path)) if line.startswith("| ")]
    assert len(rows) == 4  # header, fp, rtn-3, rtn+bc-3: configurations without a result are left out
    assert rows[3].startswith("| rtn + bias correction | 3 |")  # a variant row says which variant
    lo, hi = wilson_interval(7, 8)
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in rows[1] and "| 3, 4 |" in rows[1]
    ret = paired_retention(rtn, fp)
    assert f"{100 * ret.ratio:.1f}% [{100 * ret.ci95[0]:.1f}, {100 * ret.ci95[1]:.1f}]" in rows[2]
    assert rows[2].startswith("| rtn | 3 | 3.010 |") and "| 1, 4 |" in rows[2]
    assert "nan" not in "\n".join(rows)  # closed loop only: the open-loop columns say "-"
    (tmp_path / "actquant-3").mkdir()
    (tmp_path / "actquant-3" / "eval.json").write_text(json.dumps(
        {"config": {"key": "actquant-3", "method": "actquant", "bpw": 3.0}, "eval": {"closed_loop": fp}}))
    ratios = r.ratio_table(r.load_runs(tmp_path))
    assert "nan" not in "\n".join(ratios) and "| 3 | rtn | - | - |" in ratios[2]
    # a second calibration draw of actquant-3: one more row, the mean over both draws
    draw = _closed_loop({"push": [False, True, False, False], "reach": [True, True, True, False]}, seed=3)
    (tmp_path / "actquant+s1-3").mkdir()
    (tmp_path / "actquant+s1-3" / "eval.json").write_text(json.dumps(
        {"config": {"key": "actquant+s1-3", "method": "actquant", "bpw": 3.0, "flags": ["--calib-seed", "1"],
                    "label": "actquant + calibration draw 1"}, "eval": {"closed_loop": draw}}))
    rows = [line for line in r.main_table(r.load_runs(tmp_path)) if line.startswith("| ")]
    pooled = pooled_retention([fp, draw], fp)
    assert rows[-1].startswith("| **actquant, mean of 2 calibration draws** | 3 |")
    assert f"{100 * pooled.ratio:.1f}% [{100 * pooled.ci95[0]:.1f}, {100 * pooled.ci95[1]:.1f}]" in rows[-1]
    assert "| 2.0, 3.5 |" in rows[-1]  # per task: the mean successes over the draws
    for key in ("actquant-3", "actquant+s1-3"):
        (tmp_path / key / "eval.json").unlink()
        (tmp_path / key).rmdir()

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- mt9:begin -->\nold\n<!-- mt9:end -->\n<!-- actquant_eval:begin -->\nkeep\n"
                   "<!-- actquant_eval:end -->\n")
    r.write_report(tmp_path, str(doc), None, tag="mt9")
    text = doc.read_text()
    assert "old" not in text and "keep" in text and "seed 3" in text and "No open loop" in text
    assert text.index("<!-- mt9:begin -->") < text.index("| rtn | 3 |") < text.index("<!-- mt9:end -->")


def test_hbvla_eval_shares_run_all(tmp_path: Path, monkeypatch) -> None:
    """hbvla_eval.py's narrower command line (no --arch/--seed/...) reaches run_all's defaults."""
    g = _load("actquant_eval")
    opts = g.eval_options(argparse.Namespace(episodes=10, eval_args=("--no-closed-loop",)))
    assert opts == g.EvalOptions(episodes=10, seed=0, open_loop=True, extra_eval_args=("--no-closed-loop",))


def test_hbvla_eval_budgets_and_plot(tmp_path: Path) -> None:
    """hbvla_eval.py's budgets name its configurations; its plot reads the runs (methods and ablations)."""
    h = _load("hbvla_eval")
    keys = [c.key for c in h.method_configs(1.4, 1.31)]
    assert keys == ["fp32", "hbvla-1.4", "sign-1.4", "actquant-1.31", "billm-6"]
    assert all(c.bpw == 1.4 and c.flags[0] == "--hbvla-ablation" for c in h.ablation_configs(1.4))
    pytest.importorskip("matplotlib")
    runs = {"fp32": (None, "full precision (PyTorch)", [True] * 4), "hbvla-2": ("hbvla", "HBVLA", [True, True, False, False]),
            "hbvla-2-no-haar": ("hbvla", "HBVLA, no-haar", [True, False, False, False])}
    for key, (method, label, wins) in runs.items():
        (tmp_path / key).mkdir()
        doc = {"config": {"key": key, "method": method, "bpw": 2.0, "label": label},
               "eval": {"closed_loop": _closed_loop({"push": wins})}, "quant": {"vision_llm_bpw": 1.85}}
        (tmp_path / key / "eval.json").write_text(json.dumps(doc))
    h.plot(tmp_path, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert "| HBVLA, no-haar | 1.850 | 25.0 % (1/4;" in h.report(tmp_path)
