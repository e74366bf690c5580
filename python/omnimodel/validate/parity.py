"""One parity check: feed the runtime what the reference saw, compare every intermediate, report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .compare import compare_all, thresholds_for
from .reference import ReferenceRun
from .report import ValidationReport


class RuntimeRun(dict):
    """Every named intermediate of one runtime run (name -> array, execution order), plus which graph
    the runtime ran (``graph_source``: "plugin:<path>", "builtin:<arch>", "linked:<file>"), asked from
    the loaded model rather than assumed from what the caller meant to load."""

    graph_source: str | None = None


def run_runtime(gguf: str | os.PathLike[str], inputs: dict[str, np.ndarray], threads: int = 1) -> RuntimeRun:
    """Every named intermediate of one runtime run, in execution order."""
    from omnimodel import _runtime

    with _runtime.Model(str(gguf), n_threads=threads) as m:
        run = RuntimeRun(m.run(inputs, capture=["*"]))
        run.graph_source = m.graph_source
        return run


def check_parity(
    runtime_tensors: dict[str, np.ndarray],
    reference: ReferenceRun,
    outtype: str,
    *,
    graph: str = "",
    checkpoint: str | Path | None = None,
    instruction: str = "",
    seed: int = 0,
    threads: int = 1,
    reference_weights: str = "checkpoint",
) -> ValidationReport:
    results, unmatched = compare_all(
        runtime_tensors, reference.tensors, thresholds_for(outtype), action_span=reference.action_span
    )
    return ValidationReport(
        outtype=outtype,
        thresholds=thresholds_for(outtype),
        results=results,
        unmatched=unmatched,
        graph=graph,
        graph_source=getattr(runtime_tensors, "graph_source", None),
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        reference_dtype=reference.dtype,
        instruction=instruction,
        seed=seed,
        threads=threads,
        reference_weights=reference_weights,
    )


__all__ = ["RuntimeRun", "run_runtime", "check_parity"]
