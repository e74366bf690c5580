"""`omnimodel convert openvla-oft --bpw B` end to end on the demo policy: calibration, allocation,
optimisation, the GGUF holding the quantizer's exact blocks (zero-padded rows included), the generated
graph padding activations to match, and parity against PyTorch running the weights decoded from the GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omnimodel.cli.main import main
from omnimodel.gguf.reader import load_raw, load_tensor, read_gguf

import omnimodel._runtime  # noqa: F401  a broken build must fail, not skip


@pytest.fixture(scope="module")
def quant_out(tmp_path_factory) -> tuple[Path, str]:
    """`convert --bpw 2.5` with no checkpoint: the demo policy, the documented main use."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bpw") / "q25"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["convert", "openvla-oft", "--bpw", "2.5", "--out", str(out)]) == 0
    return out, buf.getvalue()


def test_budget_met_and_reported(quant_out) -> None:
    out, text = quant_out
    alloc = json.loads((out / "allocation.json").read_text())
    assert alloc["format"] == "omnimodel-allocation" and alloc["budget_bpw"] == 2.5
    assert alloc["error_model"] == "paper"  # the default: ActQuant's own error model
    assert abs(alloc["bpw"] - 2.5) <= 0.02  # the tolerance, over the quantized matrices
    assert len(alloc["tensors"]) == 30
    # the summary names every quantized matrix's type, the three bpw figures (provenance.BpwFigures'
    # words, the same as inspect's) and the size against F16
    assert "[4/10] allocate" in text
    assert f"quantized {alloc['bpw']:.3f} bpw (the --bpw measure, target 2.5), matrices " in text and " file " in text
    assert "the same model with F16 matrices would be" in text
    for t in alloc["tensors"]:
        assert t["name"] in text
    assert "convert: parity passed (mixed)" in text


def test_gguf_holds_the_quantizers_blocks(quant_out) -> None:
    out, _ = quant_out
    gf = read_gguf(out / "model.gguf")
    alloc = {t["name"]: t for t in json.loads((out / "allocation.json").read_text())["tensors"]}
    assert gf.metadata["omnimodel.method"] == "actquant"
    assert gf.metadata["omnimodel.target_bpw"] == pytest.approx(2.5)
    by_name = {t.name: t for t in gf.tensors}
    padded = dict(zip(gf.metadata.get("omnimodel.padded.names", []), gf.metadata.get("omnimodel.padded.widths", [])))
    for name, a in alloc.items():
        t = by_name[name]
        assert t.ggml_type.name == a["type"]
        assert t.shape == (a["shape"][0], a["pad_to"])  # stored rows as the allocation padded them
        if a["pad_to"] != a["shape"][1]:
            assert padded[name] == a["shape"][1] and t.real_width == a["shape"][1]
            # the padding is zeros, and the reader drops it
            assert load_tensor(gf, name).shape == tuple(a["shape"])
    assert padded, "the demo's 64/336-wide rows need padding for some chosen type at 2.5 bpw"
    # honest bits: the achieved bpw in the file counts real weights only, and matches the allocation
    alloc_bpw = json.loads((out / "allocation.json").read_text())["bpw"]
    q_bits = sum(by_name[n].n_bytes * 8 for n in alloc)
    q_n = sum(a["shape"][0] * a["shape"][1] for a in alloc.values())
    assert q_bits / q_n == pytest.approx(alloc_bpw, rel=1e-9)
    assert gf.metadata["omnimodel.quantized_bpw"] == pytest.approx(alloc_bpw, rel=1e-6)


def test_parity_against_the_decoded_weights(quant_out) -> None:
    out, _ = quant_out
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] and rep["reference_weights"] == "gguf" and rep["outtype"] == "mixed"
    assert rep["min_cosine"] >= 0.999 and len(rep["results"]) >= 40
    # `omnimodel validate` re-runs it from the output directory alone
    assert main(["validate", str(out)]) == 0


def test_runtime_padding_is_exercised(quant_out) -> None:
    """A padded matrix feeds a real matmul: the runtime pads the activation, and its output matches
    PyTorch (checked above); here: the stored bytes decode to the reference values plus zero columns."""
    out, _ = quant_out
    gf = read_gguf(out / "model.gguf")
    t = next(t for t in gf.tensors if t.real_width is not None)
    from omnimodel import _runtime

    raw = load_raw(gf, t.name)
    full = _runtime.ggml_dequantize(int(t.ggml_type), np.ascontiguousarray(raw), t.shape[-1])
    assert np.all(full[:, t.real_width:] == 0.0)


def test_allocation_file_reproduces_the_types(quant_out, tmp_path, capsys) -> None:
    out, _ = quant_out
    again = tmp_path / "again"
    assert main(["convert", "openvla-oft", "--allocation", str(out / "allocation.json"), "--method", "rtn",
                 "--out", str(again)]) == 0
    # RTN in a complete allocation needs no statistics: no calibration pass runs, no Fisher is scored
    assert "[3/10] calibrate: not needed" in capsys.readouterr().out
    assert "fisher_error" not in json.loads((again / "quant_report.json").read_text())
    a = {t["name"]: t["type"] for t in json.loads((out / "allocation.json").read_text())["tensors"]}
    b = {t["name"]: t["type"] for t in json.loads((again / "allocation.json").read_text())["tensors"]}
    assert a == b
    assert read_gguf(again / "model.gguf").metadata["omnimodel.method"] == "rtn"


def test_infeasible_budget_names_the_range_and_leaves_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert main(["convert", "openvla-oft", "--bpw", "0.5", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "0.5 bpw is infeasible" in err and "between" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_override_list_on_top_of_the_solver(tmp_path, capsys) -> None:
    overrides = tmp_path / "ov.txt"
    overrides.write_text("language_model.model.layers.*.mlp.*=Q8_0  # keep the LLM MLPs at 8 bits\n")
    out = tmp_path / "ov"
    assert main(["convert", "openvla-oft", "--bpw", "4", "--method", "rtn", "--allocation", str(overrides),
                 "--out", str(out)]) == 0
    alloc = json.loads((out / "allocation.json").read_text())
    mlp = [t for t in alloc["tensors"] if ".mlp." in t["name"] and t["name"].startswith("language_model")]
    assert mlp and all(t["type"] == "Q8_0" and t["source"] == "override" for t in mlp)
    bad = tmp_path / "bad.txt"
    bad.write_text("no.such.tensor=Q4_0\n")
    assert main(["convert", "openvla-oft", "--bpw", "4", "--allocation", str(bad), "--out", str(tmp_path / "b")]) != 0
    assert "matches no quantized matrix" in capsys.readouterr().err


def test_encoder_error_model_end_to_end(tmp_path, capsys) -> None:
    """`--error-model encoder`: every candidate type scored by actquant's own encoder, the allocation under
    the budget, parity passed, and the error model recorded in allocation.json and quant_report.json."""
    out = tmp_path / "enc"
    assert main(["convert", "openvla-oft", "--bpw", "2.5", "--error-model", "encoder", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "encoder error model (actquant): 30 matrices, " in text and "convert: parity passed (mixed)" in text
    alloc = json.loads((out / "allocation.json").read_text())
    assert alloc["error_model"] == "encoder" and abs(alloc["bpw"] - 2.5) <= 0.02
    report = json.loads((out / "quant_report.json").read_text())
    assert report["error_model"] == report["options"]["error_model"] == "encoder"
    # what the allocation charged each matrix at its type is what its shipped blocks cost (their Fisher-
    # weighted error in the report), times the matrix's HSIC weight; recalibrated here, that weight agrees
    # to ~1e-3 (ggml's Q2_0, the measured model's, would be off ~4x on most of these matrices)
    import torch
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.demo_assets import DEMO_POLICY_DIR
    from omnimodel.quant.pipeline import QuantOptions, calibrate_policy
    from omnimodel.quant.sensitivity import sensitivities, sensitivity_weights

    torch.set_num_threads(1)
    stats = calibrate_policy(load_policy(DEMO_POLICY_DIR), QuantOptions(bpw=2.5), log=lambda s: None)
    sens = sensitivity_weights(sensitivities(stats))
    shipped = {t["name"]: t["errors"]["fisher"] for t in report["tensors"]}
    for t in alloc["tensors"]:
        assert t["error"] == pytest.approx(sens[t["name"]] * shipped[t["name"]], rel=1e-2), t["name"]


def test_error_model_flag_errors(tmp_path, capsys) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        main(["convert", "openvla-oft", "--bpw", "2.5", "--error-model", "nope", "--out", out])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    for args, needle in (
        (["--demo", "--error-model", "encoder"], "applies to quantized conversions"),
        (["--bpw", "3", "--method", "awq", "--error-model", "encoder"], "cannot score --method awq"),
        (["--demo", "--hsic-tau", "2"], "--hsic-tau applies to quantized conversions"),
        (["--bpw", "2.5", "--hsic-tau", "0"], "--hsic-tau must be a positive number"),
        (["--bpw", "2.5", "--no-hsic", "--hsic-tau", "2"], "cannot go with --no-hsic"),
    ):
        assert main(["convert", "openvla-oft", *args, "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert list(tmp_path.iterdir()) == []
