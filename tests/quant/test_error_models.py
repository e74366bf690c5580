"""The allocation's error models on the miniature: the encoder model scores exactly what the method would
write, the measured model what ggml would, and both feed the same solver under the same budget."""

from __future__ import annotations

import numpy as np
import pytest
from omnimodel.gguf.types import GGMLType
from omnimodel.quant.allocate import TensorAllocation, measured_errors, tensor_options
from omnimodel.quant.pipeline import QuantOptions, QuantPipelineError
from omnimodel.quant.quantize import encoder_errors, plan_allocation, quantize_matrix

# the IQ types' ggml searches cost seconds on the miniature; these cover the numpy-encoded small-block
# types (where our encoder and ggml's differ most, and which the 32/48-wide rows take zero-padded) and a
# 256-block K type
CANDIDATES = (GGMLType.Q1_0, GGMLType.Q2_0, GGMLType.Q4_0, GGMLType.Q4_K)


def _few(cal) -> list:
    """A fitting and a padded vision matrix, and an LLM one: every path of the candidate loop."""
    by_name = {t.name: t for t in cal.targets}
    names = ("vision_backbone.featurizer.blocks.0.attn.proj.weight",
             "vision_backbone.fused_featurizer.blocks.0.mlp.fc2.weight",
             "language_model.model.layers.0.self_attn.o_proj.weight")
    return [by_name[n] for n in names]


@pytest.mark.parametrize(("method", "importance"), [("actquant", "fisher"), ("actquant", "magnitude"), ("rtn", "amf")])
def test_encoder_errors_are_what_the_method_writes(calibrated, method, importance) -> None:
    """Each (matrix, type) error is the Fisher-weighted error of ``quantize_matrix``'s own blocks at that
    type (what ``MatrixQuantizer`` writes into the GGUF), times the matrix's sensitivity."""
    cal, targets = calibrated, _few(calibrated)
    sens = {t.name: 1.0 + i for i, t in enumerate(targets)}
    errs = encoder_errors(targets, cal.weights, cal.stats, method, importance=importance, sensitivity=sens,
                          candidates=CANDIDATES)
    for tg in targets:
        opts = tensor_options(tg.n_in, CANDIDATES)
        assert set(errs[tg.name]) == {o.type for o in opts}
        for o in opts:
            ta = TensorAllocation(tg.name, tg.shape, tg.layer, o.type.name, o.pad_to, o.bpw)
            shipped = quantize_matrix(cal.weights[tg.name], ta, method, cal.stats, importance=importance)
            assert errs[tg.name][o.type] == pytest.approx(sens[tg.name] * shipped.errors["fisher"], rel=1e-9)


def test_encoder_beats_ggml_where_our_encoder_does(calibrated) -> None:
    """ActQuant keeps ggml's row-by-row result as one candidate per row, so its error is never above the
    measured (ggml) model's; on Q2_0, where ggml ignores the importance and a level, it is far below."""
    cal, targets = calibrated, _few(calibrated)
    enc = encoder_errors(targets, cal.weights, cal.stats, "actquant", importance="fisher", candidates=CANDIDATES)
    ggml = measured_errors(targets, cal.weights, lambda n: cal.stats.fisher[n], candidates=CANDIDATES)
    for tg in targets:
        assert enc[tg.name][GGMLType.F16] == ggml[tg.name][GGMLType.F16]
        assert set(enc[tg.name]) == set(ggml[tg.name])  # the same options, padding included
        for t in enc[tg.name]:
            assert enc[tg.name][t] <= ggml[tg.name][t] * (1 + 1e-6)
        assert enc[tg.name][GGMLType.Q2_0] < 0.5 * ggml[tg.name][GGMLType.Q2_0]


@pytest.mark.parametrize("budget", [2.5, 4.0])
def test_encoder_allocation_meets_the_budget(calibrated, budget) -> None:
    cal = calibrated
    lines: list[str] = []
    a = plan_allocation(cal.targets, cal.weights, cal.stats, budget, error_model="encoder", method="actquant",
                        importance="fisher", candidates=CANDIDATES, log=lines.append)
    assert budget - 0.02 <= a.bpw <= budget + 1e-9
    assert a.error_model == "encoder" and a.to_dict()["error_model"] == "encoder"
    # one total line with the time it took (and no per-matrix chatter on a run this short)
    assert len(lines) == 1 and f"encoder error model (actquant): {len(cal.targets)} matrices" in lines[0]
    assert lines[0].rstrip().endswith(" s")
    paper = plan_allocation(cal.targets, cal.weights, cal.stats, budget, candidates=CANDIDATES)
    assert paper.error_model == "paper"


def test_encoder_error_model_refusals(calibrated, tmp_path) -> None:
    cal = calibrated
    with pytest.raises(ValueError, match="encoder error model supports actquant, rtn, imatrix, gptq, not 'awq'"):
        encoder_errors(cal.targets[:1], cal.weights, cal.stats, "awq")
    with pytest.raises(ValueError, match="error_model must be one of"):
        plan_allocation(cal.targets, cal.weights, cal.stats, 3.0, error_model="nope")
    with pytest.raises(ValueError, match="need calibration statistics"):
        plan_allocation(cal.targets, cal.weights, None, 3.0, error_model="encoder", hsic=False)
    for opts, message in (
        (QuantOptions(bpw=3, method="awq", error_model="encoder"), "cannot score --method awq"),
        (QuantOptions(bpw=2, method="hbvla", error_model="measured"), "--method hbvla has none"),
        (QuantOptions(allocation=tmp_path / "a.json", error_model="encoder"), "solver's allocation"),
        (QuantOptions(bpw=3, error_model="nope"), "error model must be one of"),
    ):
        with pytest.raises(QuantPipelineError, match=message):
            opts.check()
    QuantOptions(bpw=3, method="gptq", error_model="encoder").check()
    QuantOptions(bpw=3, method="awq", error_model="measured").check()


def test_spilled_statistics_are_read_once_per_matrix(calibrated, tmp_path) -> None:
    """A spilled Fisher is a file read: the encoder model reads each matrix's once, not once per type."""
    from dataclasses import replace

    from omnimodel.quant.spill import SpilledArrays

    cal, targets = calibrated, _few(calibrated)
    spilled = SpilledArrays(tmp_path / "fisher")
    for tg in targets:
        spilled.put(tg.name, cal.stats.fisher[tg.name])
    reads: list[str] = []
    get = SpilledArrays.__getitem__

    def counting(self, name):
        reads.append(name)
        return get(self, name)

    stats = replace(cal.stats, fisher=spilled)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SpilledArrays, "__getitem__", counting)
        errs = encoder_errors(targets, cal.weights, stats, "actquant", importance="fisher", candidates=CANDIDATES)
    assert sorted(reads) == sorted(t.name for t in targets)
    ref = encoder_errors(targets, cal.weights, cal.stats, "actquant", importance="fisher", candidates=CANDIDATES)
    for tg in targets:
        np.testing.assert_allclose(list(errs[tg.name].values()), list(ref[tg.name].values()), rtol=1e-12)


def test_progress_lines_on_long_scoring_passes() -> None:
    """A 7B model's scoring takes long: a line per interval while it runs, then the total."""
    from omnimodel.quant.allocate import _ScoringProgress

    lines: list[str] = []
    p = _ScoringProgress(lines.append, "encoder error model (actquant)", 3, every_s=0.0)
    for _ in range(3):
        p.step(17)
    p.finish()
    assert all(ln.startswith("      encoder error model (actquant): ") for ln in lines)  # convert's indent
    assert "1/3 matrices scored" in lines[0] and "2/3 matrices scored" in lines[1]
    assert len(lines) == 3 and "3 matrices, 51 encodes scored in " in lines[2]
