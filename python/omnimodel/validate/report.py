"""`ValidationReport`: every compared tensor in execution order, as JSON for tools and a table for people."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .compare import ACTION_RANGE, TensorComparison, Tolerance

REPORT_VERSION = 2


@dataclass
class ValidationReport:
    outtype: str
    tolerance: Tolerance
    results: list[TensorComparison]  # execution order (the runtime's capture order)
    unmatched: list[str] = field(default_factory=list)  # runtime tensors with no reference counterpart
    graph: str = ""  # the graph the output directory ships ("plugin:plugin/<name>.so"), reloaded by validate
    graph_source: str | None = None  # which graph the runtime said it ran (omnimodel_graph_source)
    checkpoint: str | None = None
    reference_dtype: str = "float64"
    instruction: str = ""
    seed: int = 0
    threads: int = 1
    reflection: dict[str, Any] | None = None  # the reflector's record when it ran
    # "gguf": the references ran the weights decoded from the GGUF (what the runtime multiplies)
    reference_weights: str = "gguf"
    perturbation: float = 0.0  # R''s relative noise at each rounding point
    noise_samples: int = 1  # R' runs (seeds); a tensor's noise is the largest of their distances
    rounding: dict[str, int] = field(default_factory=dict)  # matrices per activation rounding (vec_dot_type)

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

    @property
    def worst(self) -> TensorComparison | None:
        """The tensor closest to (or furthest past) its bound."""
        finite = [r for r in self.results if not math.isnan(r.ratio)]
        return max(finite, key=lambda r: r.ratio) if finite else None

    def action_result(self) -> TensorComparison | None:
        return next((r for r in self.results if r.metric == ACTION_RANGE and r.name == "actions"), None) or next(
            (r for r in self.results if r.metric == ACTION_RANGE), None)

    def result(self, name: str) -> TensorComparison | None:
        return next((r for r in self.results if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        worst = self.worst
        return {
            "version": REPORT_VERSION,
            "passed": self.passed,
            "outtype": self.outtype,
            "tolerance": asdict(self.tolerance),
            "graph": self.graph,
            "graph_source": self.graph_source,
            "checkpoint": self.checkpoint,
            "reference_dtype": self.reference_dtype,
            "reference_weights": self.reference_weights,
            "perturbation": self.perturbation,
            "noise_samples": self.noise_samples,
            "rounding": dict(self.rounding),
            "instruction": self.instruction,
            "seed": self.seed,
            "threads": self.threads,
            "first_failure": first.name if first else None,
            "worst": {"name": worst.name, "ratio": _json_float(worst.ratio)} if worst else None,
            "min_cosine": _json_float(self.min_cosine),
            "results": [
                {**{k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(r).items()},
                 "runtime_shape": list(r.runtime_shape), "reference_shape": list(r.reference_shape)}
                for r in self.results
            ],
            "unmatched": list(self.unmatched),
            "reflection": self.reflection,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        if int(d.get("version", 1)) != REPORT_VERSION:
            raise ValueError(f"validation report version {d.get('version', 1)}, this omnimodel reads {REPORT_VERSION} "
                             "(re-run convert)")
        results = [
            TensorComparison(
                name=r["name"],
                runtime_shape=tuple(r["runtime_shape"]),
                reference_shape=tuple(r["reference_shape"]),
                metric=r["metric"],
                error=_from_json_float(r["error"]),
                noise=_from_json_float(r["noise"]),
                inherent=_from_json_float(r["inherent"]),
                bound=_from_json_float(r["bound"]),
                cosine=_from_json_float(r["cosine"]),
                passed=bool(r["passed"]),
                reason=r.get("reason", ""),
                # absent from reports written before the local check
                local_error=_from_json_float(r.get("local_error", "nan")),
                local_noise=_from_json_float(r.get("local_noise", "nan")),
                local_bound=_from_json_float(r.get("local_bound", "nan")),
            )
            for r in d["results"]
        ]
        return cls(
            outtype=d["outtype"],
            tolerance=Tolerance(**d["tolerance"]),
            results=results,
            unmatched=list(d.get("unmatched", [])),
            graph=d.get("graph", ""),
            graph_source=d.get("graph_source"),
            checkpoint=d.get("checkpoint"),
            reference_dtype=d.get("reference_dtype", "float64"),
            instruction=d.get("instruction", ""),
            seed=int(d.get("seed", 0)),
            threads=int(d.get("threads", 1)),
            reflection=d.get("reflection"),
            reference_weights=d.get("reference_weights", "gguf"),
            perturbation=float(d.get("perturbation", 0.0)),
            noise_samples=int(d.get("noise_samples", 1)),
            rounding=dict(d.get("rounding", {})),
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
        """One row per tensor: inherent d(E,R), noise d(R',R), runtime d(runtime,R) and the bound; the
        first failing tensor is marked with '>>' so the eye lands on the cause."""
        first = self.first_failure
        width = max([len(r.name) for r in self.results] + [6])
        head = (f"   {'tensor':<{width}} {'shape':<14} {'inherent':>9} {'noise':>9} {'runtime':>9} {'bound':>9}"
                f" {'of bound':>8}  result")
        lines = [head, "-" * len(head)]
        for r in self.results:
            mark = ">> " if r is first else "   "
            shape = "x".join(str(s) for s in r.runtime_shape) or "scalar"
            verdict = "pass" if r.passed else f"FAIL  {r.reason}"
            if r.passed_locally:
                verdict = (f"pass, given the runtime's inputs: {r.local_error:.2e} <= {r.local_bound:.2e} "
                           f"(noise {r.local_noise:.2e})")
            unit = " *" if r.metric == ACTION_RANGE else ""
            lines.append(f"{mark}{r.name:<{width}} {shape:<14} {r.inherent:>9.2e} {r.noise:>9.2e} {r.error:>9.2e} "
                         f"{r.bound:>9.2e} {_pct(r.ratio):>8}  {verdict}{unit}")
        n_fail = sum(not r.passed for r in self.results)
        t = self.tolerance
        lines.append("")
        lines.append(
            f"distances against R, the {self.reference_dtype} reference that rounds where the runtime rounds "
            f"(activations: {_rounding(self.rounding)}): relative RMS error, * = largest error / action range. "
            f"inherent = d(exact, R), noise = the largest d(R', R) of {self.noise_samples} R' = R in float32 + "
            f"{self.perturbation:.1e} relative noise at each rounding point; pass: runtime <= bound = max({t.k:g} x noise, floor {t.floor:g}; "
            f"actions {t.action_floor:g}), or the same rule given the runtime's own upstream tensors (R and R' "
            f"teacher-forced) while every earlier tensor passes")
        summary = f"{len(self.results)} tensors compared ({self.outtype}), graph {self.graph_source or self.graph}: "
        if self.passed:
            w = self.worst
            summary += f"all pass; closest to its bound: {w.name} at {_pct(w.ratio)}" if w else "all pass"
            n_local = sum(r.passed_locally for r in self.results)
            if n_local:
                summary += (f" ({n_local} passed given the runtime's own inputs: a rounding flip upstream, "
                            "computed correctly from there on)")
        elif not self.results:
            summary += "NOTHING COMPARED (no runtime tensor has a reference) -- FAIL"
        else:
            summary += f"{n_fail} FAIL; first failing tensor in execution order: {first.name}"
        lines.append(summary)
        act = self.action_result()
        if act is not None and math.isfinite(act.inherent):
            lines.append(f"the runtime's own rounding moves the actions by {act.inherent:.2e} of the action range "
                         f"(d(exact, R); a property of the chosen types, not a parity error)")
        if self.unmatched:
            lines.append(f"not compared (no PyTorch counterpart): {', '.join(self.unmatched)}")
        return "\n".join(lines) + "\n"


def _pct(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) else "inf" if math.isinf(ratio) else f"{100 * ratio:.0f}%"


def _rounding(rounding: dict[str, int]) -> str:
    kinds = {k: v for k, v in rounding.items() if k != "F32"}
    return ", ".join(f"{v} matrices to {k}" for k, v in kinds.items()) or "none"


def _json_float(x: float) -> float | str:
    # JSON has no NaN/inf; keep them readable instead of crashing or writing invalid JSON.
    return x if math.isfinite(x) else str(x)


def _from_json_float(x: float | str) -> float:
    return float(x)


__all__ = ["ValidationReport", "REPORT_VERSION"]
