"""One parity check: feed the runtime what the reference saw, compare every intermediate, report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .compare import compare_all, thresholds_for
from .reference import ReferenceRun
from .report import ValidationReport


def run_runtime(gguf: str | os.PathLike[str], inputs: dict[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """Every named intermediate of one runtime run, in execution order."""
    from omnimodel import _runtime

    with _runtime.Model(str(gguf), n_threads=threads) as m:
        return m.run(inputs, capture=["*"])


def check_parity(
    runtime_tensors: dict[str, np.ndarray],
    reference: ReferenceRun,
    outtype: str,
    *,
    graph: str = "builtin:openvla-oft",
    checkpoint: str | Path | None = None,
    instruction: str = "",
    seed: int = 0,
    threads: int = 1,
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
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        reference_dtype=reference.dtype,
        instruction=instruction,
        seed=seed,
        threads=threads,
    )


__all__ = ["run_runtime", "check_parity"]
