"""What `omnimodel inspect` shows about a GGUF file, as data (for --json) and as text (for people)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omnimodel.gguf import provenance
from omnimodel.gguf.reader import GGUFFile

#: Arrays longer than this are summarised ("[32000 strings]") instead of listed.
MAX_LISTED_ITEMS = 8
#: Strings longer than this are cut in the text output (chat templates run to kilobytes).
MAX_SHOWN_CHARS = 100

_ARRAY_NOUNS = {"str": "strings", "bool": "bools", "f32": "floats", "f64": "floats"}


@dataclass(frozen=True)
class TensorRow:
    name: str
    type: str
    shape: list[int]  # PyTorch order
    n_elements: int
    n_bytes: int
    bpw: float


@dataclass(frozen=True)
class TypeRow:
    type: str
    count: int
    n_elements: int
    n_bytes: int
    bpw: float


@dataclass(frozen=True)
class Totals:
    n_tensors: int
    n_parameters: int  # real weights (provenance.parameter_count): what bench reports too
    n_elements: int  # stored elements, row padding included
    tensor_bytes: int
    file_size: int
    # provenance.BpwFigures, the same numbers as the omnimodel.* keys of a file omnimodel wrote
    bpw_quantized: float | None  # over block-quantized matrices: the --bpw measure (omnimodel.quantized_bpw)
    bpw_matrices: float  # over every >= 2-D tensor (omnimodel.achieved_bpw)
    bpw_total: float  # over every tensor (omnimodel.achieved_bpw_total)
    file_type: int
    file_type_name: str


@dataclass(frozen=True)
class Report:
    path: str
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any]  # long arrays replaced by a summary
    metadata_types: dict[str, str]
    tensors: list[TensorRow]
    by_type: list[TypeRow]
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_name(t: Any) -> str:
    return getattr(t, "type_name", None) or t.ggml_type.name


def build_report(gf: GGUFFile) -> Report:
    """One row per tensor, except that an HBVLA matrix's ``<base>.hb.*`` tensors are one row of type
    HBVLA (``provenance.group_hbvla``): its out x in real weights and every byte of its planes, means,
    permutation, salient parts and header."""
    tensors = provenance.group_hbvla(gf.tensors)
    rows = [
        TensorRow(t.name, _type_name(t), list(t.shape), t.n_elements, t.n_bytes, t.bpw)
        for t in tensors
    ]
    by_type: dict[str, list[int]] = {}
    for t in sorted(tensors, key=lambda t: (int(t.ggml_type), _type_name(t))):
        acc = by_type.setdefault(_type_name(t), [0, 0, 0])
        acc[0] += 1
        acc[1] += t.n_weights
        acc[2] += t.n_bytes
    type_rows = [TypeRow(name, c, n, b, 8.0 * b / n if n else 0.0) for name, (c, n, b) in by_type.items()]
    ftype = gf.metadata.get("general.file_type")
    if not isinstance(ftype, int) or isinstance(ftype, bool):
        ftype = provenance.llama_file_type(gf.tensors)
    bpw = provenance.bpw_figures(gf.tensors)
    totals = Totals(
        n_tensors=len(gf.tensors),  # as stored: an HBVLA matrix is several
        n_parameters=provenance.parameter_count(gf.tensors),
        n_elements=sum(t.n_elements for t in gf.tensors),
        tensor_bytes=sum(t.n_bytes for t in gf.tensors),
        file_size=gf.file_size,
        bpw_quantized=bpw.quantized,
        bpw_matrices=bpw.matrices,
        bpw_total=bpw.file,
        file_type=ftype,
        file_type_name=provenance.file_type_name(ftype),
    )
    metadata = {k: _summarise(v, gf.metadata_types.get(k, "")) for k, v in gf.metadata.items()}
    return Report(
        path=str(gf.path),
        version=gf.version,
        alignment=gf.alignment,
        data_offset=gf.data_offset,
        metadata=metadata,
        metadata_types=dict(gf.metadata_types),
        tensors=rows,
        by_type=type_rows,
        totals=totals,
    )


def _summarise(value: Any, label: str) -> Any:
    if isinstance(value, list) and len(value) > MAX_LISTED_ITEMS:
        element = label[4:-1] if label.startswith("arr[") else ""
        noun = _ARRAY_NOUNS.get(element, f"{element} values" if element else "items")
        return f"[{len(value)} {noun}]"
    return value


# ---------------------------------------------------------------------- text


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for div, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


def format_report(r: Report) -> str:
    out: list[str] = [
        f"file: {r.path}",
        f"GGUF v{r.version}, alignment {r.alignment}, data section at byte {r.data_offset}",
        "",
        f"metadata ({len(r.metadata)} keys):",
    ]
    key_w = max((len(k) for k in r.metadata), default=0)
    type_w = max((len(t) for t in r.metadata_types.values()), default=0)
    for key, value in r.metadata.items():
        out.append(f"  {key:<{key_w}}  {r.metadata_types.get(key, ''):<{type_w}}  {_show_value(key, value, r)}")

    out += ["", f"tensors ({len(r.tensors)}):"]
    table = [["name", "type", "shape", "params", "bytes", "size", "bpw"]]
    for t in r.tensors:
        table.append(
            [t.name, t.type, _show_shape(t.shape), f"{t.n_elements:,}", f"{t.n_bytes:,}", human_bytes(t.n_bytes), f"{t.bpw:.3f}"]
        )
    out += _columns(table, right={3, 4, 5, 6})

    tt = r.totals
    out += [
        "",
        "totals:",
        f"  tensors:          {tt.n_tensors}",
        f"  parameters:       {tt.n_parameters:,} ({human_count(tt.n_parameters)})"
        + (f"; {tt.n_elements:,} stored with row padding" if tt.n_elements != tt.n_parameters else ""),
        f"  tensor data:      {tt.tensor_bytes:,} bytes ({human_bytes(tt.tensor_bytes)})",
        f"  file size:        {tt.file_size:,} bytes ({human_bytes(tt.file_size)})",
        f"  file type:        {tt.file_type_name}",
        f"  bits per weight:  {_bpw_line(tt, r.metadata.get(provenance.KEY_TARGET_BPW))}",
        "",
        "by type:",
    ]
    table = [["type", "tensors", "params", "bytes", "size", "bpw"]]
    for row in r.by_type:
        table.append(
            [row.type, str(row.count), f"{row.n_elements:,}", f"{row.n_bytes:,}", human_bytes(row.n_bytes), f"{row.bpw:.3f}"]
        )
    out += _columns(table, right={1, 2, 3, 4, 5})
    return "\n".join(out) + "\n"


def _bpw_line(tt: Totals, target: Any) -> str:
    figures = provenance.BpwFigures(tt.bpw_quantized, tt.bpw_matrices, tt.bpw_total)
    ok_target = isinstance(target, (int, float)) and not isinstance(target, bool)
    return figures.describe(float(target) if ok_target else None)


def _show_value(key: str, value: Any, r: Report) -> str:
    if key == "general.file_type" and isinstance(value, int):
        return f"{value} ({provenance.file_type_name(value)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        is_summary = r.metadata_types.get(key, "").startswith("arr")
        text = value
        if len(text) > MAX_SHOWN_CHARS and not is_summary:
            text = text[:MAX_SHOWN_CHARS] + f"... ({len(value)} chars)"
        # Keep one key per line even for multi-line values such as chat templates.
        return text.replace("\r", "\\r").replace("\n", "\\n")
    return repr(value) if isinstance(value, list) else str(value)


def _show_shape(shape: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _columns(table: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
