"""The knobs of the HBVLA binarizer, and the presets built from them.

One quantizer covers HBVLA, its ablations and the BiLLM-style baseline: each is a setting of the same
knobs, so they are compared with the same code, the same storage and the same bit count.

The knobs and what the paper (seed 000, METHODS.md section 2) says about them:

* ``permutation``: the greedy pairing-and-chaining column order before the Haar transform (Algorithm 1),
  with squared-l2 column distances (``"l2"``, the paper's choice) or l1 (``"l1"``, its Table 3), or none.
* ``haar``: one-level row-wise Haar on adjacent (permuted) column pairs, kernels [1/2, 1/2] and
  [1/2, -1/2] (the paper's appendix B). Off: the permuted weights are binarized as they are.
* ``grouping``: how the binarized coefficients of a row share scales. ``"element"`` is the paper's
  dense/sparse split: every coefficient belongs to one of two groups by a searched magnitude threshold
  (exact search over all split points), each group with its own alpha; the membership is a stored bit per
  coefficient. ``"block"`` gives every 128 consecutive coefficients of a row (one Q1_0 block) its own
  alpha and stores no membership bits: the permutation's chaining keeps similar columns together, so a
  block's coefficients have similar magnitudes. Both use the Q1_0 block as the unit a threshold / alpha
  is fitted on, since Q1_0 stores a scale per 128 values anyway.
* ``mean``: ``"band"`` one mean per row and Haar band shared by the groups (the paper's shared mean),
  ``"group"`` a mean per group (HBLLM/BiLLM's default; the ablation "without the shared mean"),
  ``"none"`` plain alpha * sign.
* ``salient_cap``: the most salient columns (0: no salient part). How many of them are used is chosen by
  the Hessian-weighted reconstruction error among ``salient_counts`` (default 0, 1, 2, 4, ... up to the
  cap, and the cap).
* ``salient_col_haar`` / ``salient_order``: the salient residual's column-wise Haar (across row pairs)
  and how many residual binarizations it gets (BiLLM uses 2); see ``salient.py``.
* ``error_feedback``: GPTQ-style error feedback as HBLLM's code does (not in the paper's description),
  a column pair at a time (``feedback.py``). On by default: on real-width matrices it cuts the
  Hessian-weighted error 3-26x at no storage cost (docs/hbvla.md); ``ABLATIONS["no-feedback"]`` is off.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PERMUTATIONS = ("l2", "l1", None)
GROUPINGS = ("block", "element")
MEANS = ("band", "group", "none")


@dataclass(frozen=True)
class HbvlaConfig:
    permutation: str | None = "l2"
    haar: bool = True
    grouping: str = "block"
    mean: str = "band"
    mean_refine: int = 2  # alternations of (signs, alphas) <-> shared mean
    salient_cap: int = 128
    salient_counts: tuple[int, ...] | None = None  # None: 0 and powers of two up to the cap, and the cap
    salient_col_haar: bool = True
    salient_order: int = 1
    salient_rows: int = 256  # rows the salient-count trials run on (all rows when fewer)
    error_feedback: bool = True
    damp: float = 0.01  # GPTQ's dampening of diag(H), relative to its mean
    fill_window: int = 3  # neighbours each side a salient column's fill value is averaged from
    seed: int = 0
    name: str = field(default="hbvla", compare=False)

    def __post_init__(self) -> None:
        if self.permutation not in PERMUTATIONS:
            raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {self.permutation!r}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        if self.mean not in MEANS:
            raise ValueError(f"mean must be one of {MEANS}, got {self.mean!r}")
        if self.salient_cap < 0:
            raise ValueError(f"salient_cap must be >= 0, got {self.salient_cap}")
        if self.salient_order not in (1, 2):
            raise ValueError(f"salient_order must be 1 or 2, got {self.salient_order}")
        if self.salient_counts is not None and (not self.salient_counts or min(self.salient_counts) < 0):
            raise ValueError(f"salient_counts must be non-negative counts, got {self.salient_counts}")
        if self.mean_refine < 0 or self.damp < 0 or self.fill_window < 1 or self.salient_rows < 2:
            raise ValueError("mean_refine >= 0, damp >= 0, fill_window >= 1 and salient_rows >= 2 are required")

    @property
    def main_planes(self) -> int:
        """Q1_0 planes of the non-salient part: signs, + membership (element), + group means."""
        return 1 if self.grouping == "block" else (3 if self.mean == "group" else 2)

    def trial_counts(self, n_candidates: int) -> list[int]:
        """The salient counts tried, none above the candidates available."""
        cap = min(self.salient_cap, n_candidates)
        if self.salient_counts is not None:
            return sorted({min(int(k), cap) for k in self.salient_counts})
        counts = {0, cap}
        k = 1
        while k < cap:
            counts.add(k)
            k *= 2
        return sorted(counts)

    def with_(self, **changes) -> HbvlaConfig:
        return replace(self, **changes)


def hbvla(**changes) -> HbvlaConfig:
    """The paper's method with storage-efficient block grouping (about 1.2-1.4 honest bpw) and error
    feedback."""
    return HbvlaConfig(**changes)


def hbvla_element(**changes) -> HbvlaConfig:
    """The paper's method as written: per-coefficient dense/sparse groups (a membership bit each)."""
    return HbvlaConfig(grouping="element", name="hbvla-element").with_(**changes)


def billm_style(**changes) -> HbvlaConfig:
    """BiLLM-style residual binarization in the same framework: no permutation, no Haar, per-element
    two-group split with a mean per group, salient columns with an order-2 residual, GPTQ feedback."""
    return HbvlaConfig(
        permutation=None,
        haar=False,
        grouping="element",
        mean="group",
        salient_col_haar=False,
        salient_order=2,
        error_feedback=True,
        name="billm-style",
    ).with_(**changes)


def sign_alpha(**changes) -> HbvlaConfig:
    """Plain sign x alpha per 128 weights (Q1_0 RTN) in the same framework: no permutation, Haar, mean or
    salient part; alpha = mean |w| over the block's real columns (ggml's Q1_0 reference quantizer, except
    that a zero-padded tail block is not averaged with its padding)."""
    return HbvlaConfig(permutation=None, haar=False, grouping="block", mean="none", salient_cap=0,
                       error_feedback=False, name="sign-alpha").with_(**changes)


#: The paper's ablations (issue 11), as changes to the HBVLA preset.
ABLATIONS: dict[str, dict] = {
    "no-permutation": {"permutation": None},
    "l1-permutation": {"permutation": "l1"},
    "no-haar": {"haar": False, "salient_col_haar": False},
    "no-salient": {"salient_cap": 0},
    "no-shared-mean": {"mean": "group"},
    "no-feedback": {"error_feedback": False},
}

__all__ = [
    "ABLATIONS",
    "GROUPINGS",
    "MEANS",
    "PERMUTATIONS",
    "HbvlaConfig",
    "billm_style",
    "hbvla",
    "hbvla_element",
    "sign_alpha",
]
