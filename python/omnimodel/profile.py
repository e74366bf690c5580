"""Per-op profile of the runtime: where the compute time of one graph goes.

``profile_runtime(model, inputs, runs)`` runs the graph node by node (``Model.set_profile``), ``runs``
times, takes each node's median time and groups the nodes:

    by op       MUL_MAT split by weight type ("MUL_MAT w=bf16"; "MUL_MAT act" when neither side is a
                weight, e.g. attention scores), FLASH_ATTN_EXT, CPY, CONT, GELU_ERF, NORM, SOFT_MAX,
                IM2COL, ... with calls, wall and CPU milliseconds, share and GFLOP/s (wall) where the
                FLOPs are known
    by stage    the same per pipeline stage; a node belongs to the stage whose end node it precedes
                (``stage_ends``: the names of each stage's last tensor, in order; the rest is the last)

Node-by-node compute adds a few microseconds per node (a thread-pool wake-up and a barrier) and
turns off the CPU backend's op fusion, so the profiled total is a little above the plain one; both are
reported.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from omnimodel.gguf.types import GGMLType


def _type_name(type_id: int) -> str:
    try:
        return GGMLType(type_id).name.lower()
    except ValueError:
        return str(type_id)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def node_category(node: dict[str, Any]) -> str:
    """The row a node is counted in: matmuls by weight type, attention by K/V type, else the op."""
    op = node["op"]
    if op == "CUSTOM" and node["src0_is_weight"]:  # omnimodel's GEMMs (gemm_bf16.cpp, gemm_lowbit.cpp): weight, packed x
        return f"GEMM(omni) w={_type_name(node['src_type'][0])}"
    if op == "CUSTOM" and _type_name(node["type"]) == "i32":
        return "GEMM(omni) pack x"
    if op == "CUSTOM" and node["name"].startswith("pad_rows"):
        return "PAD(rows)"
    if op == "CUSTOM" and node["name"].startswith("attention (packed"):
        return "ATTN(omni) pack K,V"
    if op == "CUSTOM" and node["name"].startswith("attention"):
        return "ATTN(omni)"
    if op == "MAP_CUSTOM1" and _type_name(node["type"]) == "f32":
        return "GELU_ERF(fast)"  # the only map op the runtime builds (fast_gelu.cpp)
    if op == "MUL_MAT":
        if node["src0_is_weight"]:
            return f"MUL_MAT w={_type_name(node['src_type'][0])}"
        return "MUL_MAT act"
    if op == "FLASH_ATTN_EXT":
        return f"FLASH_ATTN_EXT kv={_type_name(node['src_type'][1])}"
    if op == "CPY":
        return f"CPY ->{_type_name(node['type'])}"
    return op


def node_flops(node: dict[str, Any]) -> float:
    """Multiply-adds x 2 of matmul-like nodes; 0 where not counted."""
    if node["op"] == "MUL_MAT" or (node["op"] == "CUSTOM" and node["src0_is_weight"]):
        k = node["src_ne"][0][0]
        return 2.0 * k * _prod(node["ne"])
    if node["op"] == "CUSTOM" and node["name"].startswith("attention (softmax"):
        d, h, tq, b = node["ne"]
        return 2.0 * tq * tq * h * b * 2 * d  # every key (masked ones included), as for flash
    if node["op"] == "FLASH_ATTN_EXT":
        d, tq, h, b = node["src_ne"][0]
        tk = node["src_ne"][1][1]
        dv = node["ne"][0]
        return 2.0 * tq * tk * h * b * (d + dv)  # Q K^T and P V, every key (masked ones included)
    return 0.0


@dataclass
class OpRow:
    category: str
    calls: int = 0
    seconds: float = 0.0  # wall-clock
    cpu_seconds: float = 0.0  # CPU time of all threads: the measure least disturbed by other jobs
    flops: float = 0.0

    @property
    def gflops(self) -> float | None:
        return self.flops / self.seconds / 1e9 if self.flops and self.seconds > 0 else None

    @property
    def gflops_cpu(self) -> float | None:
        """Per CPU-second of all threads: the kernel's rate per core, whatever else the machine runs."""
        return self.flops / self.cpu_seconds / 1e9 if self.flops and self.cpu_seconds > 0 else None


@dataclass
class Profile:
    total_s: float  # sum of the profiled nodes' median times
    total_cpu_s: float
    plain_s: float | None  # median compute time of unprofiled runs, when measured
    n_nodes: int
    by_op: list[OpRow]
    by_stage: dict[str, list[OpRow]] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def rows(rs: list[OpRow]) -> list[dict[str, Any]]:
            return [dict(asdict(r), ms=round(r.seconds * 1e3, 3), cpu_ms=round(r.cpu_seconds * 1e3, 3),
                         gflops=None if r.gflops is None else round(r.gflops, 1),
                         gflops_cpu=None if r.gflops_cpu is None else round(r.gflops_cpu, 1)) for r in rs]

        return {
            "total_ms": round(self.total_s * 1e3, 3),
            "total_cpu_ms": round(self.total_cpu_s * 1e3, 3),
            "plain_ms": None if self.plain_s is None else round(self.plain_s * 1e3, 3),
            "n_nodes": self.n_nodes,
            "by_op": rows(self.by_op),
            "stage_ms": {k: round(v * 1e3, 3) for k, v in self.stage_s.items()},
            "by_stage": {k: rows(v) for k, v in self.by_stage.items()},
        }


def _group(nodes: list[dict[str, Any]], seconds: list[float], cpu: list[float]) -> list[OpRow]:
    rows: dict[str, OpRow] = {}
    for n, s, c in zip(nodes, seconds, cpu):
        r = rows.setdefault(node_category(n), OpRow(node_category(n)))
        r.calls += 1
        r.seconds += s
        r.cpu_seconds += c
        r.flops += node_flops(n)
    return sorted(rows.values(), key=lambda r: -r.seconds)


def summarize(runs: list[list[dict[str, Any]]], stage_ends: dict[str, str] | None = None,
              last_stage: str = "rest", plain_s: float | None = None) -> Profile:
    """Group profiled runs (each ``Model.profile()``) of one graph; ``stage_ends`` maps stage names, in
    order, to the name of the last tensor of each stage."""
    if not runs or not runs[0]:
        raise ValueError("no profiled nodes (was the model run with set_profile(True)?)")
    nodes = runs[0]
    if any(len(r) != len(nodes) for r in runs):
        raise ValueError("profiled runs differ in node count: not the same graph")
    seconds = [statistics.median(r[i]["seconds"] for r in runs) for i in range(len(nodes))]
    cpu = [statistics.median(r[i].get("cpu_seconds", 0.0) for r in runs) for i in range(len(nodes))]

    stage_of: list[str] = []
    ends = list((stage_ends or {}).items())
    current = 0
    for n in nodes:
        stage_of.append(ends[current][0] if current < len(ends) else last_stage)
        if current < len(ends) and n["name"] == ends[current][1]:
            current += 1
    by_stage: dict[str, list[OpRow]] = {}
    stage_s: dict[str, float] = {}
    for stage in dict.fromkeys(stage_of):
        idx = [i for i, s in enumerate(stage_of) if s == stage]
        by_stage[stage] = _group([nodes[i] for i in idx], [seconds[i] for i in idx], [cpu[i] for i in idx])
        stage_s[stage] = sum(seconds[i] for i in idx)
    return Profile(total_s=sum(seconds), total_cpu_s=sum(cpu), plain_s=plain_s, n_nodes=len(nodes),
                   by_op=_group(nodes, seconds, cpu), by_stage=by_stage, stage_s=stage_s)


def profile_runtime(model, inputs: dict[str, Any], runs: int = 3, warmup: int = 1,
                    stage_ends: dict[str, str] | None = None, last_stage: str = "rest") -> Profile:
    """Profile ``model`` (an ``omnimodel._runtime.Model``) on ``inputs``: unprofiled runs for the plain
    time, then ``runs`` node-by-node runs."""
    import time

    plain = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        model.run(inputs)
        if i >= warmup:
            plain.append(time.perf_counter() - t0)
    model.set_profile(True)
    try:
        profiled = []
        for _ in range(runs):
            model.run(inputs)
            profiled.append(model.profile())
    finally:
        model.set_profile(False)
    return summarize(profiled, stage_ends, last_stage, plain_s=statistics.median(plain))


def format_profile(p: Profile, top: int = 14) -> str:
    total = p.total_s or 1.0
    lines = [f"profiled {p.total_s * 1e3:.1f} ms wall, {p.total_cpu_s * 1e3:.1f} ms CPU over {p.n_nodes} nodes"
             + (f" (unprofiled run: {p.plain_s * 1e3:.1f} ms wall)" if p.plain_s is not None else "")]

    def table(rows: list[OpRow], title: str, stage_total: float) -> None:
        lines.append("")
        lines.append(f"{title:<30} {'calls':>6} {'wall ms':>10} {'share':>7} {'CPU ms':>10} {'GFLOP/s':>8} "
                     f"{'/CPU-s':>7}")
        for r in rows[:top]:
            g = f"{r.gflops:>8.1f}" if r.gflops is not None else f"{'':>8}"
            gc = f"{r.gflops_cpu:>7.1f}" if r.gflops_cpu is not None else f"{'':>7}"
            lines.append(f"{r.category:<30} {r.calls:>6} {r.seconds * 1e3:>10.2f} {100 * r.seconds / total:>6.1f}% "
                         f"{r.cpu_seconds * 1e3:>10.2f} {g} {gc}")
        if len(rows) > top:
            rest = rows[top:]
            lines.append(f"{'(other ops)':<30} {sum(r.calls for r in rest):>6} "
                         f"{sum(r.seconds for r in rest) * 1e3:>10.2f} {100 * sum(r.seconds for r in rest) / total:>6.1f}% "
                         f"{sum(r.cpu_seconds for r in rest) * 1e3:>10.2f}")
        del stage_total

    table(p.by_op, "op (all stages)", total)
    for stage, rows in p.by_stage.items():
        table(rows, f"stage {stage}: {p.stage_s[stage] * 1e3:.1f} ms", p.stage_s[stage])
    return "\n".join(lines) + "\n"


__all__ = ["OpRow", "Profile", "format_profile", "node_category", "node_flops", "profile_runtime", "summarize"]
