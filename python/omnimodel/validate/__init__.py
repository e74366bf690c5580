"""Parity between the runtime and the PyTorch reference, and automatic repair of a generated graph.

    reference.py  run PyTorch with hooks on the runtime's inputs; intermediates by module path
    compare.py    per-tensor metrics and thresholds per outtype
    parity.py     run the runtime, compare everything -> ValidationReport
    report.py     ValidationReport: JSON and a table for people
    reflector.py  first failing tensor -> its plan module -> try the skill's fixes until one passes
"""

from .compare import THRESHOLDS, TensorComparison, Thresholds, compare_all, compare_tensor, thresholds_for
from .report import ValidationReport

__all__ = [
    "THRESHOLDS",
    "TensorComparison",
    "Thresholds",
    "ValidationReport",
    "compare_all",
    "compare_tensor",
    "thresholds_for",
]
