"""Parity between the runtime and the PyTorch reference, and automatic repair of a generated graph.

    numerics.py   where the runtime rounds: each matmul's activations to its weight type's vec_dot_type
    reference.py  run PyTorch with hooks on the runtime's inputs: exact (E), emulating (R), noisy (R')
    compare.py    per-tensor distances and the measured tolerance: d(runtime, R) <= max(K d(R', R), floor)
    parity.py     run the runtime and the references, compare everything -> ValidationReport
    report.py     ValidationReport: JSON and a table for people
    reflector.py  first failing tensor -> its plan module -> try the skill's fixes until one passes

The design, and the measurements behind K and the floors: docs/parity.md.
"""

from .compare import DEFAULT_TOLERANCE, TensorComparison, Tolerance, compare_all, compare_tensor
from .report import ValidationReport

__all__ = [
    "DEFAULT_TOLERANCE",
    "TensorComparison",
    "Tolerance",
    "ValidationReport",
    "compare_all",
    "compare_tensor",
]
