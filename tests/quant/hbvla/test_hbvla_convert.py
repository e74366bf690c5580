"""`omnimodel convert openvla-oft --method hbvla` end to end on the demo policy, and the pipeline pieces it
is made of: the knobs solved for --bpw (or the feasible range named), the policy-aware Hessian of the
attention projections, the GGUF holding each matrix's <base>.hb.* tensors in its place, the plan
recording them, the validator's emulation of the runtime's rounding, and every stored bit counted."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.cli.main import main
from omnimodel.gguf.reader import read_gguf

import omnimodel._runtime  # noqa: F401  a broken build must fail, not skip

OVERRIDE = "language_model.model.layers.1.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def demo_policy():
    from omnimodel.arch import registry

    arch = registry.get("openvla-oft")
    return arch.load_policy(arch.demo_checkpoint)


@pytest.fixture(scope="module")
def hbvla_out(tmp_path_factory) -> tuple[Path, str]:
    """`convert --method hbvla --bpw 2` on the demo, one matrix overridden to Q8_0 (issue item 4)."""
    d = tmp_path_factory.mktemp("hbvla")
    overrides = d / "keep.txt"
    overrides.write_text(f"{OVERRIDE}=Q8_0\n")
    out = d / "model"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["convert", "openvla-oft", "--demo", "--method", "hbvla", "--bpw", "2", "--allocation",
                   str(overrides), "--calib-episodes", "2", "--calib-memory", "1", "--threads", "2", "--out", str(out)])
    assert rc == 0, buf.getvalue()[-3000:]
    return out, buf.getvalue()


def test_convert_passes_parity_with_hbvla_matrices(hbvla_out) -> None:
    out, text = hbvla_out
    assert "convert: parity passed (mixed)" in text
    report = json.loads((out / "validation_report.json").read_text())
    assert report["passed"] and report["rounding"]["HBVLA"] >= 1  # the emulation ran for HBVLA matrices
    plan = json.loads((out / "plan.json").read_text())
    types = {t["name"]: t["ggml_type"] for t in plan["tensors"]}
    q = json.loads((out / "quant_report.json").read_text())
    for row in q["tensors"]:
        want = {"hbvla": "HBVLA", "fallback": row.get("fallback"), "override": row.get("type")}[row["kind"]]
        assert types[row["name"]] == want
    assert types[OVERRIDE] == "Q8_0"


def test_gguf_stores_planes_in_place_of_the_weight(hbvla_out) -> None:
    from omnimodel.quant.hbvla import read_matrix

    out, _ = hbvla_out
    gf = read_gguf(out / "model.gguf")
    names = {t.name for t in gf.tensors}
    q = json.loads((out / "quant_report.json").read_text())
    kinds = {r["name"]: r["kind"] for r in q["tensors"]}
    assert q["matrices"]["hbvla"] >= 1 and q["matrices"]["fallback"] >= 1 and q["matrices"]["override"] == 1
    for name, kind in kinds.items():
        base = name[: -len(".weight")]
        if kind == "hbvla":
            assert name not in names and base + ".hb.hdr" in names and base + ".hb.p0" in names
            assert read_matrix(gf, name).shape == tuple(next(r["shape"] for r in q["tensors"] if r["name"] == name))
        else:
            assert name in names and base + ".hb.hdr" not in names
    assert next(t for t in gf.tensors if t.name == OVERRIDE).ggml_type.name == "Q8_0"


def test_every_stored_bit_is_counted(hbvla_out) -> None:
    """quant_report's per-matrix bits equal the bytes of that matrix's tensors in the file; inspect and
    the file's provenance keys count an HBVLA matrix as one matrix of out x in weights."""
    from omnimodel.gguf import provenance
    from omnimodel.gguf.report import build_report

    out, text = hbvla_out
    gf = read_gguf(out / "model.gguf")
    q = json.loads((out / "quant_report.json").read_text())
    by_base: dict[str, int] = {}
    for t in gf.tensors:
        base = provenance.hbvla_base(t.name)
        by_base[base + ".weight" if base else t.name] = by_base.get(base + ".weight" if base else t.name, 0) + t.n_bytes
    bits = 0
    weights = 0
    for row in q["tensors"]:
        if row["kind"] == "override":
            bits += 8 * by_base[row["name"]]
        else:
            assert row["bits"]["total"] == 8 * by_base[row["name"]], row["name"]
            bits += row["bits"]["total"]
        weights += row["shape"][0] * row["shape"][1]
    assert q["vision_llm_bpw"] == pytest.approx(bits / weights)
    assert f"quantized {q['vision_llm_bpw']:.3f} bpw" in text  # the convert summary's --bpw measure
    rep = build_report(gf)
    rows = {r.name: r for r in rep.tensors}
    hb_rows = [r for r in rep.tensors if r.type == "HBVLA"]
    assert len(hb_rows) == q["matrices"]["hbvla"]
    for r in hb_rows:
        assert r.n_bytes == by_base[r.name] and r.n_elements == r.shape[0] * r.shape[1]
    assert not any(".hb." in n for n in rows)
    assert rep.totals.bpw_quantized == pytest.approx(q["vision_llm_bpw"], rel=1e-6)
    assert gf.metadata["omnimodel.quantized_bpw"] == pytest.approx(q["vision_llm_bpw"], rel=1e-5)
    assert gf.metadata["omnimodel.method"] == "hbvla"


def test_budget_out_of_reach_names_the_range(demo_policy) -> None:
    from omnimodel.quant.pipeline import QuantOptions, QuantPipelineError, check_budget

    with pytest.raises(QuantPipelineError, match=r"cannot meet 1 bits per weight.* reach \d\.\d+ to \d\.\d+ bpw"):
        check_budget(demo_policy, QuantOptions(bpw=1.0, method="hbvla"))
    with pytest.raises(QuantPipelineError, match=r"billm stores \d\.\d+ bits per weight.*above the --bpw 2 target"):
        check_budget(demo_policy, QuantOptions(bpw=2.0, method="billm"))
    with pytest.raises(QuantPipelineError, match="--hbvla-ablation takes --method hbvla"):
        QuantOptions(bpw=2.0, method="sign", ablation="no-haar").check()


def test_solver_picks_knobs_by_budget(demo_policy) -> None:
    from omnimodel.quant.binarize import plan_binarization

    small = plan_binarization(demo_policy, "hbvla", 2.0)
    large = plan_binarization(demo_policy, "hbvla", 4.0)
    assert small.estimate_bpw <= 2.0 and small.estimate_bpw < large.estimate_bpw <= 4.0
    assert (small.config.grouping, large.config.grouping) == ("block", "element")
    no_sal = plan_binarization(demo_policy, "hbvla", 4.0, ablation="no-salient")
    assert no_sal.config.salient_cap == 0  # the ablation keeps its part off whatever the budget
    assert plan_binarization(demo_policy, "sign", 2.0).config.name == "sign-alpha"
    assert not plan_binarization(demo_policy, "hbvla", 2.0, ablation="no-policy-aware").policy_aware


def test_policy_aware_hessian_of_attention_projections(demo_policy) -> None:
    """H~ for exactly the binarized attention projections: symmetric, PSD, and not X X^T (the token
    weights from the block loss change it)."""
    from omnimodel.quant import calibrate
    from omnimodel.quant.binarize import plan_binarization, policy_aware_saliency
    from omnimodel.quant.pipeline import QuantOptions, load_samples

    torch.set_num_threads(2)
    opts = QuantOptions(bpw=2.0, method="hbvla", calib_episodes=1, steps_per_episode=2)
    samples = load_samples(demo_policy, opts)
    stats = calibrate(demo_policy, samples, fisher=False, hessian=True)
    plan = plan_binarization(demo_policy, "hbvla", 2.0)
    sal = policy_aware_saliency(demo_policy, plan, stats, samples, log=lambda _m: None)
    attn = {n for n in plan.hbvla_names if ".self_attn." in n or ".attn." in n}
    assert set(sal) == attn and attn
    for name, h in sal.items():
        assert np.allclose(h, h.T) and np.linalg.eigvalsh(h).min() > -1e-8 * np.abs(h).max()
        hx = np.asarray(stats.hessian[name], np.float64)
        assert not np.allclose(h / np.trace(h), hx / np.trace(hx), rtol=1e-3)


def test_rounding_delta_is_the_runtime_rounding() -> None:
    """The validator's emulation adds exactly apply(q, x, act) - apply(q, x) to the exact output."""
    from omnimodel.quant import hbvla as hb
    from omnimodel.quant.hbvla.execution import rounding_delta

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 256))
    x = rng.normal(size=(5, 256)) * np.linspace(0.1, 3, 256)
    q = hb.quantize_matrix(w, x.T @ x, hb.hbvla(salient_cap=4))
    delta = rounding_delta(q, x, hb.q8_0_round)
    assert np.abs(delta).max() > 0
    np.testing.assert_allclose(delta, hb.apply(q, x, hb.q8_0_round) - hb.apply(q, x), rtol=1e-9, atol=1e-12)


def test_provenance_names_match_storage() -> None:
    from omnimodel.gguf import provenance
    from omnimodel.quant.hbvla import storage

    assert provenance.HBVLA_SUFFIXES == storage.SUFFIXES and provenance.HBVLA_INFIX == storage._INFIX
