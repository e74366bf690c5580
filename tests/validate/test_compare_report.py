"""Comparison math, the measured tolerance, first-failure selection, report JSON and table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omnimodel.validate.compare import (
    ACTION_RANGE,
    DEFAULT_TOLERANCE,
    REL_RMS,
    Tolerance,
    compare_all,
    compare_tensor,
    cosine,
    judge_locally,
    range_error,
    rel_rms,
)
from omnimodel.validate.report import ValidationReport

TOL = Tolerance(k=3.0, floor=1e-6, action_floor=1e-6)


def test_cosine_edge_cases() -> None:
    x = np.array([1.0, -2.0, 3.0])
    assert cosine(x, x) == pytest.approx(1.0)
    assert cosine(x, -x) == pytest.approx(-1.0)
    assert cosine(x, 5 * x) == pytest.approx(1.0)  # scale-free
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0  # identical
    assert cosine(np.zeros(3), x) == 0.0  # nothing in common
    assert cosine(x, np.zeros(3)) == 0.0


def test_distances_are_scale_free_with_zero_edge_cases() -> None:
    a, b = np.array([3.0, 4.0]), np.array([0.0, 0.0]) + np.array([3.0, 4.0]) * 1.01
    assert rel_rms(a, b) == pytest.approx(rel_rms(1e6 * a, 1e6 * b))
    assert rel_rms(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(2 / math.sqrt(17))
    assert rel_rms(np.zeros(2), np.zeros(2)) == 0.0
    assert rel_rms(np.ones(2), np.zeros(2)) == math.inf
    # the action metric: the worst element relative to its own dimension's range
    ref = np.zeros((2, 3))
    off = ref.copy()
    off[1, 2] = 0.01
    assert range_error(off, ref, np.array([1.0, 1.0, 0.5])) == pytest.approx(0.02)


def test_bound_is_k_times_noise_with_a_floor() -> None:
    t = Tolerance(k=3.0, floor=1e-6, action_floor=5e-6)
    assert t.bound(1e-3, REL_RMS) == pytest.approx(3e-3)
    assert t.bound(1e-9, REL_RMS) == 1e-6  # nothing to flip: float32 arithmetic is always allowed
    assert t.bound(1e-9, ACTION_RANGE) == 5e-6
    assert t.bound(math.nan, REL_RMS) == 1e-6  # no noise measured: only the floor


def test_pass_and_fail_follow_the_noise() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    runtime = ref + 1e-3 * rng.standard_normal(1000)  # relative RMS ~1e-3
    assert compare_tensor("t", runtime, ref, TOL, noise=1e-3).passed  # as far as a correct float32 run
    r = compare_tensor("t", runtime, ref, TOL, noise=1e-4)  # 10x a correct run: wrong
    assert not r.passed and "bound" in r.reason and r.ratio > 3
    assert r.error == pytest.approx(1e-3, rel=0.1) and r.metric == REL_RMS


def test_zeros_pass_and_half_zero_fails() -> None:
    assert compare_tensor("z", np.zeros((2, 3)), np.zeros((1, 2, 3)), TOL, noise=0.0).passed
    r = compare_tensor("z", np.zeros(3), np.ones(3), TOL, noise=0.0)
    assert not r.passed and r.cosine == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_fails(bad: float) -> None:
    good = np.ones(4)
    broken = np.array([1.0, bad, 1.0, 1.0])
    r = compare_tensor("t", broken, good, TOL, noise=1.0)
    assert not r.passed and "non-finite" in r.reason and "runtime" in r.reason
    r = compare_tensor("t", good, broken, TOL, noise=1.0)
    assert not r.passed and "reference" in r.reason


def test_shape_check_ignores_batch_one_only() -> None:
    a = np.arange(6.0)
    assert compare_tensor("t", a.reshape(2, 3), a.reshape(1, 2, 3), TOL, noise=0.0).passed
    r = compare_tensor("t", a.reshape(3, 2), a.reshape(2, 3), TOL, noise=1.0)  # same size, other layout
    assert not r.passed and "shape" in r.reason


def test_action_chunk_is_judged_by_its_range() -> None:
    ref = np.linspace(-1, 1, 14).reshape(2, 7)
    span = np.full(7, 2.0)
    off = ref.copy()
    off[1, 3] += 3e-4 * 2.0  # cosine still ~1, but 3e-4 of the range
    r = compare_tensor("actions", off, ref, TOL, noise=2e-5, action_range=span)
    assert r.cosine > 0.99999 and not r.passed and r.metric == ACTION_RANGE and r.error == pytest.approx(3e-4)
    assert compare_tensor("actions", off, ref, TOL, noise=2e-4, action_range=span).passed


def test_a_close_but_wrong_formula_fails_where_nothing_rounds() -> None:
    """tanh-GELU vs erf-GELU: cosine 1 - 1e-7, but a relative error far above float32's."""
    import torch

    x = torch.linspace(-4, 4, 4001, dtype=torch.float64)
    erf, tanh = torch.nn.functional.gelu(x).numpy(), torch.nn.functional.gelu(x, approximate="tanh").numpy()
    noise32 = rel_rms(erf.astype(np.float32), erf)  # what float32 alone does to this tensor
    r = compare_tensor("mlp", tanh, erf, DEFAULT_TOLERANCE, noise=noise32)
    assert r.cosine > 0.99999 and not r.passed


def _report(values: dict[str, float]) -> ValidationReport:
    """Runtime tensors in this order; each reference equals it except for ``values[name]`` noise; the
    noise sample says 1e-3 for every tensor."""
    rng = np.random.default_rng(1)
    runtime, ref = {}, {}
    for name, noise in values.items():
        r = rng.standard_normal(50)
        ref[name] = r
        runtime[name] = r + noise * rng.standard_normal(50)
    runtime["extra"] = np.ones(3)  # no reference: listed, never counted as passing
    results, unmatched = compare_all(runtime, ref, TOL, noise={n: 1e-3 for n in values},
                                     inherent={n: 2e-3 for n in values})
    return ValidationReport("f16", TOL, results, unmatched, rounding={"F16": 3})


def test_first_failure_is_earliest_in_execution_order() -> None:
    rep = _report({"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.5})
    assert not rep.passed
    assert rep.first_failure.name == "b"
    assert [r.name for r in rep.results] == ["a", "b", "c", "d"]
    assert rep.unmatched == ["extra"]


def test_empty_report_never_passes() -> None:
    rep = ValidationReport("f32", TOL, [], ["x"])
    assert not rep.passed
    assert "NOTHING COMPARED" in rep.format_table()


def test_report_json_roundtrip_and_table(tmp_path) -> None:
    rep = _report({"a": 0.0, "b": 0.5, "c": float("nan")})
    path = rep.write_json(tmp_path / "r.json")
    d = json.loads(path.read_text())  # valid JSON despite NaN metrics
    assert d["passed"] is False and d["first_failure"] == "b"
    assert [r["name"] for r in d["results"]] == ["a", "b", "c"]
    assert d["results"][0]["noise"] == 1e-3 and d["results"][0]["inherent"] == 2e-3
    assert d["tolerance"] == {"k": 3.0, "floor": 1e-6, "action_floor": 1e-6}
    back = ValidationReport.read_json(path)
    assert back.first_failure.name == "b" and math.isnan(back.result("c").error)
    assert back.tolerance == TOL and back.rounding == {"F16": 3}
    table = rep.format_table()
    lines = table.splitlines()
    marked = [ln for ln in lines if ln.startswith(">>")]
    assert len(marked) == 1 and " b " in marked[0] and "FAIL" in marked[0]
    assert "first failing tensor in execution order: b" in table
    assert "inherent" in lines[0] and "noise" in lines[0] and "runtime" in lines[0]
    assert "3 matrices to F16" in table
    assert "not compared (no PyTorch counterpart): extra" in table


def test_local_rule_passes_a_flip_only_while_everything_before_passed(tmp_path) -> None:
    """b and d fail the global rule; b is exact given its inputs (a rounding flip upstream), d is not
    checked locally once something before it failed."""
    rep = _report({"a": 0.0, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.5})
    local_error = {"b": 1e-7, "c": 1e-7, "d": 5e-3, "e": 1e-7}
    local_noise = {"b": 0.0, "c": 1e-3, "d": 1e-3, "e": 1e-3}
    judged = ValidationReport("f16", TOL, judge_locally(rep.results, TOL, local_error=local_error,
                                                        local_noise=local_noise), rep.unmatched)
    b, c, d, e = (judged.result(n) for n in "bcde")
    assert b.passed and b.passed_locally and b.local_bound == TOL.floor  # floor where the local noise is 0
    assert c.passed_locally and math.isclose(c.local_bound, 3e-3)
    assert not d.passed and "given the runtime's inputs: error 5.00e-03 > bound 3.00e-03" in d.reason
    assert not e.passed and "an earlier tensor failed" in e.reason  # its inputs may be d's wrong values
    assert judged.first_failure.name == "d"
    assert math.isclose(b.ratio, 1e-7 / 1e-6)  # judged by the rule that passed it
    assert judged.result("a").passed and not judged.result("a").passed_locally and math.isnan(judged.result("a").local_error)
    assert "pass, given the runtime's inputs" in next(ln for ln in judged.format_table().splitlines() if " b " in ln)
    back = ValidationReport.read_json(judged.write_json(tmp_path / "r.json"))
    assert back.result("b").passed_locally and back.result("d").local_error == 5e-3
    # a report written before the local check reads with NaN local fields
    d0 = rep.to_dict()
    for r in d0["results"]:
        for k in ("local_error", "local_noise", "local_bound"):
            r.pop(k)
    assert math.isnan(ValidationReport.from_dict(d0).result("b").local_error)


def test_local_rule_never_passes_a_shape_or_non_finite_failure() -> None:
    bad = compare_tensor("x", np.ones(3), np.ones(4), TOL, noise=1e-3)
    judged = judge_locally([bad], TOL, local_error={"x": 0.0}, local_noise={"x": 1e-3})
    assert not judged[0].passed and judged[0].reason == bad.reason


def test_old_reports_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="re-run convert"):
        ValidationReport.from_dict({"version": 1, "results": []})
