"""Parity at real width (reduced depth): correct conversions pass with the measured tolerance, each
injected fault fails at the tensor where it enters, and `omnimodel validate` re-runs the check.

The work runs once per session in a child process (tests/validate/realwidth_job.py): loading a graph
plugin registers it for the whole process, and the faulty graphs must not leak into other tests.
Full depth and every fault at f32 and f16: benchmarks/parity_realwidth.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import omnimodel._runtime  # noqa: F401  a broken build must fail, not skip

HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    import omnimodel

    pkg_parent = str(Path(omnimodel.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": pkg_parent + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("realwidth")
    res = subprocess.run([sys.executable, str(HERE / "realwidth_job.py"), str(work)], capture_output=True, text=True,
                         env=_env(), timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, json.loads((work / "result.json").read_text())


@pytest.mark.parametrize("conversion", ["f32", "f16", "q4_k", "mix"])
def test_correct_conversion_passes(job, conversion: str) -> None:
    _, result = job
    r = result["correct"][conversion]
    assert r["passed"], r
    # every runtime intermediate was compared, the runtime's own preprocessing first
    assert r["n"] >= 30 and r["names"][:2] == ["input_ids", "pixel_values"]
    assert r["worst_ratio"] < 1.0


def test_padded_k_quants_and_every_vec_dot_path_are_covered(job) -> None:
    _, result = job
    # 576-wide Llama rows stored padded to 768 for the 256-block K-quants
    assert "language_model.model.layers.0.mlp.gate_proj.weight" in result["correct"]["q4_k"]["padded"]
    assert result["correct"]["q4_k"]["types"] == ["Q4_K"]
    mix = set(result["correct"]["mix"]["types"])
    assert {"Q1_0", "Q2_0", "Q4_0", "IQ4_NL"} <= mix  # activations in Q8_0 blocks of 32
    assert {"Q2_K", "Q3_K", "IQ2_XXS", "IQ3_S", "IQ4_XS"} <= mix  # activations in Q8_K blocks of 256


@pytest.mark.parametrize(
    ("fault", "first"),
    [
        ("norm eps 1e-6", "language_model.model.layers.0"),
        ("rope theta 1e4", "language_model.model.layers.0.self_attn"),
        ("GQA head mapping", "language_model.model.layers.0.self_attn"),
        ("action read one slot off", "action_hidden_states"),
        ("image normalisation", "pixel_values"),
    ],
)
def test_fault_fails_at_the_tensor_where_it_enters(job, fault: str, first: str) -> None:
    _, result = job
    r = result["faults"][fault]
    assert not r["passed"]
    assert r["first_failure"].startswith(first), (r["first_failure"], r["first_reason"])
    if fault == "image normalisation":
        assert "image_mean" in r["first_reason"]  # the report says where preprocessing comes from


def test_faults_reuse_the_references(job) -> None:
    """The references depend on the weights and the numerics, not on the graph: five faulty graphs were
    judged against the one set computed for the correct f32 conversion."""
    _, result = job
    assert result["f32_reference_sets"] == 1


def test_omnimodel_validate_reruns_the_check(job) -> None:
    work, _ = job
    res = subprocess.run([sys.executable, "-m", "omnimodel", "validate", str(work / "out_f16"), "--threads", "2"],
                         capture_output=True, text=True, env=_env(), timeout=900)
    assert res.returncode == 0 and "validate: parity passed" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    # the table shows inherent, noise and runtime distances per tensor
    head = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("tensor"))
    assert "inherent" in head and "noise" in head and "runtime" in head
