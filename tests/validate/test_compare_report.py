"""Comparison math, first-failure selection, report JSON and table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omnimodel.errors import UsageError
from omnimodel.validate.compare import THRESHOLDS, compare_all, compare_tensor, cosine, rel_max_err, thresholds_for
from omnimodel.validate.report import ValidationReport

F32 = THRESHOLDS["f32"]


def test_cosine_edge_cases() -> None:
    x = np.array([1.0, -2.0, 3.0])
    assert cosine(x, x) == pytest.approx(1.0)
    assert cosine(x, -x) == pytest.approx(-1.0)
    assert cosine(x, 5 * x) == pytest.approx(1.0)  # scale-free
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0  # identical
    assert cosine(np.zeros(3), x) == 0.0  # nothing in common
    assert cosine(x, np.zeros(3)) == 0.0


def test_rel_err_edge_cases() -> None:
    assert rel_max_err(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(0.5)
    assert rel_max_err(np.zeros(2), np.zeros(2)) == 0.0
    assert rel_max_err(np.ones(2), np.zeros(2)) == math.inf


def test_zeros_pass_and_half_zero_fails() -> None:
    assert compare_tensor("z", np.zeros((2, 3)), np.zeros((1, 2, 3)), F32).passed
    r = compare_tensor("z", np.zeros(3), np.ones(3), F32)
    assert not r.passed and r.cosine == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_fails(bad: float) -> None:
    good = np.ones(4)
    broken = np.array([1.0, bad, 1.0, 1.0])
    r = compare_tensor("t", broken, good, F32)
    assert not r.passed and "non-finite" in r.reason and "runtime" in r.reason
    r = compare_tensor("t", good, broken, F32)
    assert not r.passed and "reference" in r.reason


def test_shape_check_ignores_batch_one_only() -> None:
    a = np.arange(6.0)
    assert compare_tensor("t", a.reshape(2, 3), a.reshape(1, 2, 3), F32).passed
    r = compare_tensor("t", a.reshape(3, 2), a.reshape(2, 3), F32)  # same size, different layout
    assert not r.passed and "shape" in r.reason


def test_thresholds_per_outtype() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    noisy = ref + 0.01 * rng.standard_normal(1000)  # cosine ~0.99995
    assert not compare_tensor("t", noisy, ref, thresholds_for("f32")).passed
    for t in ("f16", "bf16", "q8_0"):
        assert compare_tensor("t", noisy, ref, thresholds_for(t)).passed
    with pytest.raises(UsageError):
        thresholds_for("q4_k")


def test_action_range_error() -> None:
    ref = np.linspace(-1, 1, 14).reshape(2, 7)
    span = np.full(7, 2.0)
    off = ref.copy()
    off[1, 3] += 3e-4 * 2.0  # cosine still ~1, but 3e-4 of the range > f32's 1e-4
    r = compare_tensor("actions", off, ref, F32, action_range=span)
    assert r.cosine > 0.99999 and not r.passed and r.range_err == pytest.approx(3e-4)
    assert compare_tensor("actions", off, ref, thresholds_for("f16"), action_range=span).passed


def _report(values: dict[str, float]) -> ValidationReport:
    """Runtime tensors in this order; each reference equals it except for ``values[name]`` noise."""
    rng = np.random.default_rng(1)
    runtime, ref = {}, {}
    for name, noise in values.items():
        r = rng.standard_normal(50)
        ref[name] = r
        runtime[name] = r + noise * rng.standard_normal(50)
    runtime["extra"] = np.ones(3)  # no reference: listed, never counted as passing
    results, unmatched = compare_all(runtime, ref, F32)
    return ValidationReport("f32", F32, results, unmatched)


def test_first_failure_is_earliest_in_execution_order() -> None:
    rep = _report({"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.5})
    assert not rep.passed
    assert rep.first_failure.name == "b"
    assert [r.name for r in rep.results] == ["a", "b", "c", "d"]
    assert rep.unmatched == ["extra"]


def test_empty_report_never_passes() -> None:
    rep = ValidationReport("f32", F32, [], ["x"])
    assert not rep.passed
    assert "NOTHING COMPARED" in rep.format_table()


def test_report_json_roundtrip_and_table(tmp_path) -> None:
    rep = _report({"a": 0.0, "b": 0.5, "c": float("nan")})
    path = rep.write_json(tmp_path / "r.json")
    d = json.loads(path.read_text())  # valid JSON despite NaN metrics
    assert d["passed"] is False and d["first_failure"] == "b"
    assert [r["name"] for r in d["results"]] == ["a", "b", "c"]
    back = ValidationReport.read_json(path)
    assert back.first_failure.name == "b" and math.isnan(back.result("c").cosine)
    table = rep.format_table()
    lines = table.splitlines()
    marked = [ln for ln in lines if ln.startswith(">>")]
    assert len(marked) == 1 and " b " in marked[0] and "FAIL" in marked[0]
    assert "first failing tensor in execution order: b" in table
    assert "not compared (no PyTorch counterpart): extra" in table


def test_f32_rel_err_catches_a_close_but_wrong_formula() -> None:
    """tanh-GELU vs erf-GELU: cosine ~1 - 1e-7 (passes 0.99999), but rel err ~5e-4 fails f32's 1e-4."""
    import torch

    x = torch.linspace(-4, 4, 4001, dtype=torch.float64)
    erf, tanh = torch.nn.functional.gelu(x).numpy(), torch.nn.functional.gelu(x, approximate="tanh").numpy()
    r = compare_tensor("mlp", tanh, erf, F32)
    assert r.cosine > 0.99999 and not r.passed and "rel err" in r.reason
    assert compare_tensor("mlp", tanh, erf, thresholds_for("f16")).passed  # 16-bit cannot tell; f32 must
