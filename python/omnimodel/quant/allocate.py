"""Inter-tensor allocation: one GGML type per matrix under an average-bpw budget (METHODS 1b, Eq. 6).

    minimise  sum_L ( sum_{l in L} E_l(t_l) )^2     s.t.  sum_l n_l b_l / sum_l n_l <= B

Greedy: every matrix starts at its cheapest option; repeatedly take the upgrade with the largest
(objective decrease) / (extra bits) that still fits the budget; stop when none does. Any more expensive
option of a matrix counts as an upgrade (not only the next one), because the error is not monotone in
bits across type families (IQ2_S can beat Q2_K at fewer bits).

Shapes and bits: a type whose block does not divide a matrix's row (SigLIP's 1152 and 4304 against 256)
is offered zero-padded to the next multiple when ``padding`` allows, and is charged honestly: the bits of
the padded row divided by the real row length. F16 is always offered, so every matrix has an option. The
budget is over the quantized matrices only (METHODS: "Vision+LLM BPW").

Error models: ``paper_errors`` (E = S ||W||^2 2^(-2 b), the paper's), ``measured_errors`` (the real
importance-weighted error of W at each type through ggml's quantizer, times the sensitivity weight), or
any other encoder through ``option_errors`` (``quantize.encoder_errors``: the method's own quantizer).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from omnimodel.errors import OmnimodelError
from omnimodel.gguf.types import GGMLType, parse_type, type_info

from .ggmlq import decode_cols, fits, ggml_encode, padded_width, weighted_error
from .targets import MatrixTarget

ALLOCATION_FORMAT = "omnimodel-allocation"
ALLOCATION_VERSION = 1

#: The ladder below Q8_0 the issue names, roughly by bpw: the small-block low-bit types Q1_0 (block 128,
#: 1.125 bpw) and Q2_0 (block 64, 2.25 bpw), which fit rows of 64/128 that the 256-block K/IQ types only
#: reach padded, the 32-block fallbacks, and F16 (always fits).
DEFAULT_CANDIDATES: tuple[GGMLType, ...] = (
    GGMLType.Q1_0,
    GGMLType.IQ1_M,
    GGMLType.IQ2_XXS,
    GGMLType.Q2_0,
    GGMLType.IQ2_XS,
    GGMLType.IQ2_S,
    GGMLType.Q2_K,
    GGMLType.IQ3_XXS,
    GGMLType.IQ3_S,
    GGMLType.Q3_K,
    GGMLType.IQ4_XS,
    GGMLType.IQ4_NL,
    GGMLType.Q4_0,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
    GGMLType.Q8_0,
    GGMLType.F16,
)

PADDING_MODES = ("never", "auto")


class AllocationError(OmnimodelError, ValueError):
    """An infeasible budget, or an allocation / override file that does not match the model."""


@dataclass(frozen=True)
class TypeOption:
    type: GGMLType
    pad_to: int  # row length as stored (== n_in unless zero-padded)
    bpw: float  # honest bits per real weight: padded row bytes * 8 / n_in

    @property
    def nominal_bpw(self) -> float:
        return type_info(self.type).bpw


def option_for(n_in: int, t: GGMLType | str | int, padding: str = "auto") -> TypeOption | None:
    t = parse_type(t)
    info = type_info(t)
    if fits(n_in, t):
        return TypeOption(t, n_in, info.bpw)
    if padding == "never":
        return None
    width = padded_width(n_in, t)
    return TypeOption(t, width, info.row_bytes(width) * 8.0 / n_in)


def tensor_options(
    n_in: int, candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES, padding: str = "auto"
) -> list[TypeOption]:
    """The options a matrix with rows of ``n_in`` has, cheapest first; F16 is always among them."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    types = {parse_type(c) for c in candidates} | {GGMLType.F16}
    opts = [o for o in (option_for(n_in, t, padding) for t in types) if o is not None]
    # a padded option as expensive as F16 is dominated by it (F16 is near lossless and needs no padding)
    opts = [o for o in opts if o.type == GGMLType.F16 or o.bpw < 16.0]
    return sorted(opts, key=lambda o: (o.bpw, o.type.name))


# ------------------------------------------------------------------------------------------------------
# error models


def paper_errors(
    targets: Iterable[MatrixTarget],
    weight_norms2: Mapping[str, float],
    sensitivity: Mapping[str, float] | None = None,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
) -> dict[str, dict[GGMLType, float]]:
    """E_l(t) = S_l * ||W_l||^2 * 2^(-2 b_t), b_t the type's nominal bits (padding buys no precision)."""
    cands = tuple(candidates)
    out: dict[str, dict[GGMLType, float]] = {}
    for tg in targets:
        s = 1.0 if sensitivity is None else float(sensitivity[tg.name])
        out[tg.name] = {
            o.type: s * float(weight_norms2[tg.name]) * 2.0 ** (-2.0 * o.nominal_bpw)
            for o in tensor_options(tg.n_in, cands, padding)
        }
    return out


#: One matrix's encoder for an error model: option -> the matrix encoded in it and decoded again, fp32
#: (rows, n_in), padding dropped.
OptionDecoder = Callable[[TypeOption], np.ndarray]
#: Builds a matrix's ``OptionDecoder`` from its target, fp32 weight and scoring importance (None: plain
#: squared error); called once per matrix, so what it reads per matrix (a spilled Fisher) is read once,
#: not once per candidate type.
DecoderFactory = Callable[[MatrixTarget, np.ndarray, np.ndarray | None], OptionDecoder]
Log = Callable[[str], None]


class _ScoringProgress:
    """The convert log's view of a long scoring pass: a line at most every ``every_s`` seconds and a total
    (a 7B model is hundreds of matrices x 17 encodes each, minutes to hours)."""

    def __init__(self, log: Log | None, label: str, n_matrices: int, every_s: float = 30.0) -> None:
        self.log, self.label, self.n, self.every_s = log, label, n_matrices, every_s
        self.t0 = self.last = time.perf_counter()
        self.done = self.encodes = 0

    def step(self, encodes: int) -> None:
        self.done += 1
        self.encodes += encodes
        now = time.perf_counter()
        if self.log is not None and self.done < self.n and now - self.last >= self.every_s:
            self.last = now
            self.log(f"      {self.label}: {self.done}/{self.n} matrices scored ({now - self.t0:.1f} s)")

    def finish(self) -> None:
        if self.log is not None:
            seconds = time.perf_counter() - self.t0
            self.log(f"      {self.label}: {self.done} matrices, {self.encodes} encodes scored in {seconds:.1f} s")


def option_errors(
    targets: Iterable[MatrixTarget],
    weights: Mapping[str, np.ndarray],
    decoder: DecoderFactory,
    importance: Callable[[str], np.ndarray | None] | None = None,
    sensitivity: Mapping[str, float] | None = None,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
    *,
    log: Log | None = None,
    label: str = "error model",
) -> dict[str, dict[GGMLType, float]]:
    """sensitivity x importance-weighted error of each matrix at each of its options (``tensor_options``):
    the block types through ``decoder``, F16 rounded as the writer stores it. One matrix (its weight, its
    importance, its encodes) is in memory at a time, so ``weights`` may be lazy."""
    targets = list(targets)
    cands = tuple(candidates)
    progress = _ScoringProgress(log, label, len(targets))
    out: dict[str, dict[GGMLType, float]] = {}
    for tg in targets:
        w = np.asarray(weights[tg.name], dtype=np.float32)
        imp = importance(tg.name) if importance is not None else None
        s = 1.0 if sensitivity is None else float(sensitivity[tg.name])
        encode = decoder(tg, w, imp)
        errs: dict[GGMLType, float] = {}
        for o in tensor_options(tg.n_in, cands, padding):
            w_hat = w.astype(np.float16).astype(np.float32) if o.type == GGMLType.F16 else encode(o)
            errs[o.type] = s * weighted_error(w, w_hat, imp)
        out[tg.name] = errs
        progress.step(len(errs) - 1)
    progress.finish()
    return out


def _ggml_decoder(tg: MatrixTarget, w: np.ndarray, imp: np.ndarray | None) -> OptionDecoder:
    # types ggml refuses without an importance (IQ2_XXS, IQ2_XS, IQ1_*) get a uniform one
    q_imp = imp if imp is not None else np.ones(tg.n_in, np.float32)
    return lambda o: decode_cols(ggml_encode(w, o.type, q_imp), o.type, tg.n_in)


def measured_errors(
    targets: Iterable[MatrixTarget],
    weights: Mapping[str, np.ndarray],
    importance: Callable[[str], np.ndarray | None] | None = None,
    sensitivity: Mapping[str, float] | None = None,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
    *,
    log: Log | None = None,
) -> dict[str, dict[GGMLType, float]]:
    """The importance-weighted error of each matrix at each option, through ggml's quantizer.

    ``importance(name)`` gives the vector the quantizer and the error both use: per column (in,) (the
    imatrix) or per element (rows, in) (the Fisher; ggml then quantizes row by row)."""
    return option_errors(targets, weights, _ggml_decoder, importance, sensitivity, candidates, padding,
                         log=log, label="measured error model (ggml)")


# ------------------------------------------------------------------------------------------------------
# the allocation


@dataclass(frozen=True)
class TensorAllocation:
    name: str
    shape: tuple[int, int]
    layer: str
    type: str  # GGML type name
    pad_to: int
    bpw: float  # honest
    error: float | None = None  # the error model's E_l at the chosen type
    source: str = "solver"  # "solver" | "override" | "file"


@dataclass(frozen=True)
class Allocation:
    tensors: tuple[TensorAllocation, ...]
    budget_bpw: float | None
    method: str = "actquant"
    error_model: str | None = None  # what the solver scored the types with (None: a file or overrides)

    @property
    def numel(self) -> int:
        return sum(t.shape[0] * t.shape[1] for t in self.tensors)

    @property
    def bpw(self) -> float:
        """Average honest bits per weight over the quantized matrices."""
        n = self.numel
        return sum(t.bpw * t.shape[0] * t.shape[1] for t in self.tensors) / n if n else 0.0

    def types(self) -> dict[str, GGMLType]:
        """name -> GGML type, for ``write_gguf(types=...)``."""
        return {t.name: parse_type(t.type) for t in self.tensors}

    def padded(self) -> dict[str, int]:
        """name -> stored row length, for the matrices stored zero-padded."""
        return {t.name: t.pad_to for t in self.tensors if t.pad_to != t.shape[1]}

    def type_histogram(self) -> dict[str, float]:
        """Share of the quantized weights per type."""
        n = self.numel
        h: dict[str, float] = {}
        for t in self.tensors:
            h[t.type] = h.get(t.type, 0.0) + t.shape[0] * t.shape[1] / n
        return dict(sorted(h.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict:
        return {
            "format": ALLOCATION_FORMAT,
            "version": ALLOCATION_VERSION,
            "method": self.method,
            "error_model": self.error_model,
            "budget_bpw": self.budget_bpw,
            "bpw": self.bpw,
            "budget_gap": None if self.budget_bpw is None else self.budget_bpw - self.bpw,
            "numel": self.numel,
            "types": self.type_histogram(),
            "tensors": [asdict(t) for t in self.tensors],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_json())
        return p

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "allocation") -> Allocation:
        if d.get("format") != ALLOCATION_FORMAT:
            raise AllocationError(f"{where}: not an {ALLOCATION_FORMAT} file (format={d.get('format')!r})")
        if int(d.get("version", 0)) > ALLOCATION_VERSION:
            raise AllocationError(f"{where}: version {d.get('version')} is newer than {ALLOCATION_VERSION}")
        try:
            tensors = tuple(
                TensorAllocation(
                    name=str(t["name"]),
                    shape=(int(t["shape"][0]), int(t["shape"][1])),
                    layer=str(t.get("layer", "")),
                    type=parse_type(t["type"]).name,
                    pad_to=int(t.get("pad_to", t["shape"][1])),
                    bpw=float(t["bpw"])
                    if "bpw" in t
                    else _honest_bpw(int(t["shape"][1]), t["type"], int(t.get("pad_to", t["shape"][1]))),
                    error=None if t.get("error") is None else float(t["error"]),
                    source=str(t.get("source", "file")),
                )
                for t in d["tensors"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise AllocationError(f"{where}: bad tensor entry ({e})") from None
        return cls(
            tensors,
            None if d.get("budget_bpw") is None else float(d["budget_bpw"]),
            str(d.get("method", "file")),
            None if d.get("error_model") is None else str(d["error_model"]),
        )


def _honest_bpw(n_in: int, t: GGMLType | str, pad_to: int) -> float:
    return type_info(t).row_bytes(pad_to) * 8.0 / n_in


def feasible_range(
    targets: Iterable[MatrixTarget], candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES, padding: str = "auto"
) -> tuple[float, float]:
    """(lowest, highest) average bpw any allocation over ``targets`` can reach."""
    targets = list(targets)
    cands = tuple(candidates)
    n = sum(t.numel for t in targets)
    lo = hi = 0.0
    for t in targets:
        opts = tensor_options(t.n_in, cands, padding)
        lo += t.numel * opts[0].bpw
        hi += t.numel * opts[-1].bpw
    return lo / n, hi / n


def check_budget(
    targets: Iterable[MatrixTarget],
    budget_bpw: float,
    *,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
    tol: float = 0.02,
) -> None:
    """AllocationError naming the feasible range when no allocation can meet ``budget_bpw`` within ``tol``
    (cheap: callers check before calibrating, the solver checks again)."""
    targets = list(targets)
    if not targets:
        raise AllocationError("no matrices to allocate")
    cands = tuple(candidates)
    lo, hi = feasible_range(targets, cands, padding)
    if budget_bpw < lo - 1e-9 or budget_bpw > hi + tol:
        raise AllocationError(
            f"a budget of {budget_bpw:g} bpw is infeasible: with types "
            f"{','.join(sorted({parse_type(c).name for c in cands} | {'F16'}))} the {len(targets)} quantized "
            f"matrices can average between {lo:.4f} and {hi:.4f} bpw"
        )


def allocate(
    targets: Iterable[MatrixTarget],
    errors: Mapping[str, Mapping[GGMLType, float]],
    budget_bpw: float,
    *,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
    tol: float = 0.02,
    method: str = "actquant",
    error_model: str | None = None,
) -> Allocation:
    """The layer-balanced greedy solver; raises AllocationError naming the feasible range if ``budget_bpw``
    cannot be met within ``tol``. ``error_model`` only names where ``errors`` came from, for the file."""
    targets = list(targets)
    cands = tuple(candidates)
    check_budget(targets, budget_bpw, candidates=cands, padding=padding, tol=tol)
    opts = [tensor_options(t.n_in, cands, padding) for t in targets]
    K = max(len(o) for o in opts)
    M = len(targets)
    bits = np.full((M, K), np.inf)
    E = np.full((M, K), np.inf)
    for i, (tg, oo) in enumerate(zip(targets, opts)):
        errs = errors[tg.name]
        for k, o in enumerate(oo):
            bits[i, k] = o.bpw
            if o.type not in errs:
                raise AllocationError(f"no error estimate for {tg.name} at {o.type.name}")
            E[i, k] = float(errs[o.type])
    numel = np.array([t.numel for t in targets], dtype=np.float64)
    layers = sorted({t.layer for t in targets})
    lidx = np.array([layers.index(t.layer) for t in targets])
    cur = np.zeros(M, dtype=np.int64)  # options are sorted cheapest first
    rows = np.arange(M)
    S = np.bincount(lidx, weights=E[rows, cur], minlength=len(layers))
    budget = budget_bpw * numel.sum()
    used = float((numel * bits[rows, cur]).sum())
    while True:
        extra = (bits - bits[rows, cur][:, None]) * numel[:, None]  # (M, K) extra bits of each move
        s_l = S[lidx][:, None]
        with np.errstate(invalid="ignore"):
            dJ = (s_l - E[rows, cur][:, None] + E) ** 2 - s_l**2
        # a move at no extra cost (another type at the same honest bpw, e.g. Q1_0 padded to 128 against
        # Q2_0 on rows of 64) is taken first whenever it lowers the objective
        # (by more than rounding noise: (s - E + E)^2 - s^2 can come out a hair below 0, which would make
        # a move to the current option, or between two options of equal error, repeat forever)
        gain = np.where(extra > 0, dJ < 0, dJ < -1e-9 * s_l * s_l)
        ok = (extra >= 0) & (used + extra <= budget + 1e-6) & gain & np.isfinite(E)
        if not ok.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf where a matrix has fewer options
            ratio = np.where(ok, np.where(extra > 0, -dJ / np.where(extra > 0, extra, 1.0), np.inf), -np.inf)
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        S[lidx[i]] += E[i, k] - E[i, cur[i]]
        used += float(extra[i, k])
        cur[i] = k
    out = tuple(
        TensorAllocation(
            tg.name, tg.shape, tg.layer, oo[cur[i]].type.name, oo[cur[i]].pad_to, oo[cur[i]].bpw, float(E[i, cur[i]])
        )
        for i, (tg, oo) in enumerate(zip(targets, opts))
    )
    return Allocation(out, float(budget_bpw), method, error_model)


# ------------------------------------------------------------------------------------------------------
# files: our allocation, or a per-tensor override list


def parse_overrides(text: str, where: str = "overrides") -> list[tuple[str, str]]:
    """(pattern, type) pairs from a JSON object {pattern: type}, a JSON list of {"name", "type"}, or
    text lines ``pattern=TYPE`` (``#`` comments). Patterns are fnmatch globs over tensor names."""
    s = text.strip()
    pairs: list[tuple[str, str]] = []
    if s.startswith(("{", "[")):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise AllocationError(f"{where}: invalid JSON ({e})") from None
        if isinstance(obj, dict):
            pairs = [(str(k), str(v)) for k, v in obj.items()]
        else:
            try:
                pairs = [(str(e["name"]), str(e["type"])) for e in obj]
            except (KeyError, TypeError):
                raise AllocationError(f"{where}: a list must hold objects with 'name' and 'type'") from None
    else:
        for ln, line in enumerate(s.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise AllocationError(f"{where}:{ln}: expected 'pattern=TYPE', got {line!r}")
            k, v = line.rsplit("=", 1)
            pairs.append((k.strip(), v.strip()))
    for _, v in pairs:
        try:
            parse_type(v)
        except ValueError as e:
            raise AllocationError(f"{where}: {e}") from None
    return pairs


def apply_overrides(
    alloc: Allocation, overrides: list[tuple[str, str]], padding: str = "auto", where: str = "overrides"
) -> Allocation:
    """Later patterns win; a pattern matching no tensor is an error (a typo would otherwise pass silently)."""
    chosen = {t.name: t for t in alloc.tensors}
    for pattern, tname in overrides:
        hits = [n for n in chosen if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise AllocationError(f"{where}: pattern {pattern!r} matches no quantized matrix")
        for n in hits:
            t = chosen[n]
            o = option_for(t.shape[1], tname, padding)
            if o is None:
                raise AllocationError(
                    f"{where}: {n} has rows of {t.shape[1]}, not a multiple of {parse_type(tname).name}'s "
                    f"block of {type_info(tname).block_size} (allow padding or pick another type)"
                )
            chosen[n] = TensorAllocation(n, t.shape, t.layer, o.type.name, o.pad_to, o.bpw, None, "override")
    return replace(alloc, tensors=tuple(chosen[t.name] for t in alloc.tensors))


def load_allocation(
    path: str | Path, targets: Iterable[MatrixTarget], base: Allocation | None = None, padding: str = "auto"
) -> Allocation:
    """``--allocation FILE``: our JSON (checked against the model), or an override list applied on top of
    ``base`` (an override list without a base must cover every matrix)."""
    p = Path(path)
    text = p.read_text()
    targets = list(targets)
    by_name = {t.name: t for t in targets}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and obj.get("format") == ALLOCATION_FORMAT:
        alloc = Allocation.from_dict(obj, str(p))
        names = {t.name for t in alloc.tensors}
        missing, extra = sorted(set(by_name) - names), sorted(names - set(by_name))
        if missing or extra:
            raise AllocationError(
                f"{p}: allocation does not match the model (missing {missing[:3]}, unknown {extra[:3]})"
            )
        for t in alloc.tensors:
            if t.shape != by_name[t.name].shape:
                raise AllocationError(
                    f"{p}: {t.name} has shape {t.shape} in the file, {by_name[t.name].shape} in the model"
                )
            if t.pad_to % type_info(t.type).block_size or t.pad_to < t.shape[1]:
                raise AllocationError(f"{p}: {t.name}: {t.type} cannot store rows of {t.shape[1]} padded to {t.pad_to}")
        return alloc
    overrides = parse_overrides(text, str(p))
    if base is None:
        # start from F16 everywhere so uncovered matrices stay exact rather than silently quantized
        base = Allocation(
            tuple(TensorAllocation(t.name, t.shape, t.layer, "F16", t.n_in, 16.0, None, "default") for t in targets),
            None,
            "overrides",
        )
    return apply_overrides(base, overrides, padding, str(p))


__all__ = [
    "DEFAULT_CANDIDATES",
    "PADDING_MODES",
    "Allocation",
    "AllocationError",
    "TensorAllocation",
    "TypeOption",
    "allocate",
    "apply_overrides",
    "check_budget",
    "feasible_range",
    "load_allocation",
    "measured_errors",
    "option_errors",
    "option_for",
    "paper_errors",
    "parse_overrides",
    "tensor_options",
]
