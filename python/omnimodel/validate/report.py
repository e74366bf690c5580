"""`ValidationReport`: every compared tensor in execution order, as JSON for tools and a table for people."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .compare import TensorComparison, Thresholds

REPORT_VERSION = 1


@dataclass
class ValidationReport:
    outtype: str
    thresholds: Thresholds
    results: list[TensorComparison]  # execution order (the runtime's capture order)
    unmatched: list[str] = field(default_factory=list)  # runtime tensors with no reference counterpart
    graph: str = ""  # the graph the output directory ships ("plugin:plugin/<name>.so"), reloaded by validate
    graph_source: str | None = None  # which graph the runtime said it ran (omnimodel_graph_source)
    checkpoint: str | None = None
    reference_dtype: str = "float32"
    instruction: str = ""
    seed: int = 0
    threads: int = 1
    reflection: dict[str, Any] | None = None  # the reflector's record when it ran
    # "checkpoint": the reference ran the checkpoint's weights; "gguf": the weights decoded from the
    # GGUF (quantized conversions: parity then proves the runtime computes what the quantizer shipped)
    reference_weights: str = "checkpoint"

    @property
    def passed(self) -> bool:
        # An empty comparison proves nothing: never a pass.
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def first_failure(self) -> TensorComparison | None:
        """The earliest failing tensor in execution order: later failures usually inherit its error."""
        return next((r for r in self.results if not r.passed), None)

    @property
    def min_cosine(self) -> float:
        values = [r.cosine for r in self.results]
        return min(values) if values else math.nan

    def result(self, name: str) -> TensorComparison | None:
        return next((r for r in self.results if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "version": REPORT_VERSION,
            "passed": self.passed,
            "outtype": self.outtype,
            "thresholds": asdict(self.thresholds),
            "graph": self.graph,
            "graph_source": self.graph_source,
            "checkpoint": self.checkpoint,
            "reference_dtype": self.reference_dtype,
            "reference_weights": self.reference_weights,
            "instruction": self.instruction,
            "seed": self.seed,
            "threads": self.threads,
            "first_failure": first.name if first else None,
            "min_cosine": _json_float(self.min_cosine),
            "results": [
                {**asdict(r), "cosine": _json_float(r.cosine), "rel_err": _json_float(r.rel_err),
                 "runtime_shape": list(r.runtime_shape), "reference_shape": list(r.reference_shape)}
                for r in self.results
            ],
            "unmatched": list(self.unmatched),
            "reflection": self.reflection,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        results = [
            TensorComparison(
                name=r["name"],
                runtime_shape=tuple(r["runtime_shape"]),
                reference_shape=tuple(r["reference_shape"]),
                cosine=_from_json_float(r["cosine"]),
                rel_err=_from_json_float(r["rel_err"]),
                range_err=r.get("range_err"),
                passed=bool(r["passed"]),
                reason=r.get("reason", ""),
            )
            for r in d["results"]
        ]
        return cls(
            outtype=d["outtype"],
            thresholds=Thresholds(**d["thresholds"]),
            results=results,
            unmatched=list(d.get("unmatched", [])),
            graph=d.get("graph", ""),
            graph_source=d.get("graph_source"),
            checkpoint=d.get("checkpoint"),
            reference_dtype=d.get("reference_dtype", "float32"),
            instruction=d.get("instruction", ""),
            seed=int(d.get("seed", 0)),
            threads=int(d.get("threads", 1)),
            reflection=d.get("reflection"),
            reference_weights=d.get("reference_weights", "checkpoint"),
        )

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> ValidationReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def format_table(self) -> str:
        """One row per tensor; the first failing one is marked with '>>' so the eye lands on the cause."""
        first = self.first_failure
        width = max([len(r.name) for r in self.results] + [6])
        head = f"   {'tensor':<{width}} {'shape':<16} {'1-cosine':>11} {'rel err':>9}  result"
        lines = [head, "-" * len(head)]
        for r in self.results:
            mark = ">> " if r is first else "   "
            shape = "x".join(str(s) for s in r.runtime_shape) or "scalar"
            verdict = "pass" if r.passed else f"FAIL  {r.reason}"
            # 1 - cosine shows what 7 decimals of cosine would round away (f32 differences are ~1e-10)
            lines.append(f"{mark}{r.name:<{width}} {shape:<16} {1.0 - r.cosine:>11.2e} {r.rel_err:>9.2e}  {verdict}")
        n_fail = sum(not r.passed for r in self.results)
        lines.append("")
        t = self.thresholds
        rel = f", rel err <= {t.max_rel_err:g}" if t.max_rel_err is not None else ""
        summary = (
            f"{len(self.results)} tensors compared ({self.outtype}: cosine >= {t.min_cosine}{rel}, action chunk error "
            f"<= {t.action_range_err:g} of the action range), graph {self.graph_source or self.graph}: "
        )
        if self.passed:
            summary += f"all pass, min cosine {self.min_cosine:.7f}"
        elif not self.results:
            summary += "NOTHING COMPARED (no runtime tensor has a reference) -- FAIL"
        else:
            summary += f"{n_fail} FAIL; first failing tensor in execution order: {first.name}"
        lines.append(summary)
        if self.unmatched:
            lines.append(f"not compared (no PyTorch counterpart): {', '.join(self.unmatched)}")
        return "\n".join(lines) + "\n"


def _json_float(x: float) -> float | str:
    # JSON has no NaN/inf; keep them readable instead of crashing or writing invalid JSON.
    return x if math.isfinite(x) else str(x)


def _from_json_float(x: float | str) -> float:
    return float(x)


__all__ = ["ValidationReport", "REPORT_VERSION"]
