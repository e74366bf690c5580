"""Repair a generated graph that fails parity, or say exactly why it cannot be repaired.

The first failing tensor in execution order is where the error enters: everything after it inherits the
error, so fixing anything else is pointless. The reflector maps that tensor to the plan module that
computes it (``plan.module_for_tensor``), then tries that module's skill's known fixes (``SKILLS[skill].fixes``,
an ordered list of knob settings) one at a time, each a full cycle:

    plan.with_knob(...) -> render -> build_plugin -> load_plugin -> run the runtime -> validate

It accepts the first fix after which everything passes. A fix that repairs the failing tensor but
reveals a later failure (a second, independent fault) is kept and the loop moves on to that tensor's
module. Every attempt is recorded; the end state is "passes" with what fixed it, or a diagnosis naming
the first failing tensor, its module and every knob setting tried with the cosine it produced -- never
a silent pass.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from omnimodel.plan.plan import STATED_KNOBS

from .report import ValidationReport


class ModulePlanLike(Protocol):
    name: str
    skill: str
    knobs: Mapping[str, Any]


class PlanLike(Protocol):
    def with_knob(self, module: str, knob: str, value: Any) -> PlanLike: ...

    def module_for_tensor(self, name: str) -> ModulePlanLike | None: ...


class SkillLike(Protocol):
    fixes: Sequence[Mapping[str, Any]]


# Rebuild the graph for a plan under a fresh directory and validate it.
Apply = Callable[[Any, Path], ValidationReport]


@dataclass
class Attempt:
    round: int  # which failing tensor (1 = the first one found)
    tensor: str  # the failing tensor this attempt targeted
    module: str
    skill: str
    knobs: dict[str, Any]  # the fix's knob settings
    passed: bool  # the whole report passed afterwards
    tensor_ratio: float | None  # the targeted tensor's error / bound afterwards (None: it did not run)
    first_failure: str | None  # the first failing tensor afterwards
    error: str | None = None  # render/build/load/run failure, one line
    workdir: str | None = None  # where this attempt's sources and plugin are

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.knobs.items())
        if self.error:
            return f"{{{knobs}}}: error: {self.error}"
        at = "n/a" if self.tensor_ratio is None else f"{100 * self.tensor_ratio:.0f}%"
        after = "all pass" if self.passed else f"first failure now {self.first_failure}"
        return f"{{{knobs}}}: {self.tensor} at {at} of its bound, {after}"


@dataclass
class Reflection:
    passed: bool
    plan: Any  # the plan that passes (or the one the search ended with)
    report: ValidationReport  # validation of that plan
    attempts: list[Attempt] = field(default_factory=list)
    accepted: list[Attempt] = field(default_factory=list)  # the fixes kept, in order
    diagnosis: str | None = None

    @property
    def workdir(self) -> Path | None:
        """Sources and plugin of the last accepted attempt (None: the original build stands)."""
        return Path(self.accepted[-1].workdir) if self.accepted and self.accepted[-1].workdir else None

    def summary(self) -> str:
        if self.passed and not self.accepted:
            return "passes as generated"
        if self.passed:
            return "passes after " + "; then ".join(f"{a.module} <- {a.describe()}" for a in self.accepted)
        return self.diagnosis or "fails"

    def to_dict(self) -> dict[str, Any]:
        def clean(a: Attempt) -> dict[str, Any]:
            d = asdict(a)
            d["knobs"] = {k: _jsonable(v) for k, v in a.knobs.items()}
            if d["tensor_ratio"] is not None and not math.isfinite(d["tensor_ratio"]):
                d["tensor_ratio"] = str(d["tensor_ratio"])
            return d

        return {
            "passed": self.passed,
            "summary": self.summary(),
            "attempts": [clean(a) for a in self.attempts],
            "accepted": [clean(a) for a in self.accepted],
            "diagnosis": self.diagnosis,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def _position(report: ValidationReport, name: str | None) -> int:
    names = [r.name for r in report.results]
    return names.index(name) if name in names else len(names)


def reflect(
    plan: Any,
    report: ValidationReport,
    skills: Mapping[str, SkillLike],
    apply: Apply,
    *,
    workdir: str | Path,
    max_rounds: int = 8,
) -> Reflection:
    """Search the skills' fixes for a plan that passes, starting from ``report`` (``plan`` validated)."""
    workdir = Path(workdir)
    attempts: list[Attempt] = []
    accepted: list[Attempt] = []
    current_plan, current = plan, report

    def done(passed: bool, diagnosis: str | None = None) -> Reflection:
        return Reflection(passed, current_plan, current, attempts, accepted, diagnosis)

    for rnd in range(1, max_rounds + 1):
        if current.passed:
            return done(True)
        failing = current.first_failure
        if failing is None:  # nothing compared: there is no tensor to blame
            return done(False, "no tensor was compared, so parity is unproven and nothing can be repaired")
        where = f"first failing tensor {failing.name} ({failing.reason})"
        module = current_plan.module_for_tensor(failing.name)
        if module is None:
            return done(False, f"{where} is not computed by any plan module; nothing to repair automatically")
        skill = skills.get(module.skill)
        if skill is None:
            fixes = []
        elif hasattr(skill, "alternatives"):  # the skill library's own filter: drops no-op fixes, dedups
            # the values the analyzer read from the checkpoint come first: an override or a template
            # that lost them is the likeliest fault
            stated = getattr(module, "params", {}).get(STATED_KNOBS, {})
            fixes = list(skill.alternatives(module.knobs, {k: [v] for k, v in stated.items()}))
        else:
            fixes = list(skill.fixes)
        owner = f"module {module.name} (skill {module.skill}, knobs {dict(module.knobs)})"
        if not fixes:
            return done(False, f"{where}; {owner} has no known fixes")
        tried: list[Attempt] = []
        progressed = False
        for fix in fixes:
            if all(module.knobs.get(k) == v for k, v in fix.items()):
                continue  # this is the setting that just failed
            adir = workdir / f"attempt-{len(attempts) + 1}"
            attempt = Attempt(rnd, failing.name, module.name, module.skill, dict(fix), False, None, None,
                              workdir=str(adir))
            attempts.append(attempt)
            tried.append(attempt)
            try:
                candidate = current_plan
                for knob, value in fix.items():  # the plan may reject a value (schema check): a failed try
                    candidate = candidate.with_knob(module.name, knob, value)
                new = apply(candidate, adir)
            except Exception as e:  # noqa: BLE001  a broken variant (does not compile, crashes) is a failed try
                attempt.error = " ".join((str(e) or type(e).__name__).split()) or traceback.format_exc(limit=1)
                continue
            target = new.result(failing.name)
            attempt.tensor_ratio = target.ratio if target is not None else None
            attempt.passed = new.passed
            attempt.first_failure = new.first_failure.name if new.first_failure else None
            if new.passed:
                accepted.append(attempt)
                current_plan, current = candidate, new
                return done(True)
            # Progress: this tensor is repaired and the first failure moved later -> another fault.
            if target is not None and target.passed and _position(new, attempt.first_failure) > _position(
                new, failing.name
            ):
                accepted.append(attempt)
                current_plan, current = candidate, new
                progressed = True
                break
        if not progressed:
            listing = "; ".join(a.describe() for a in tried) or "no fix differs from the current knobs"
            return done(False, f"{where}; {owner}; tried {len(tried)} fix(es): {listing}; none passes")
    return done(False, f"gave up after {max_rounds} rounds of repairs; first failing tensor "
                       f"{current.first_failure.name if current.first_failure else '?'}")


@dataclass
class PluginSteps:
    """The real rebuild cycle, as injectable steps (tests replace them with fakes)."""

    render: Callable[[Any, Path], Any]  # (plan, sources_dir)
    build_plugin: Callable[[Path, Path], Path]  # (sources_dir, build_dir) -> plugin path
    load_plugin: Callable[[Path], Any]
    run_runtime: Callable[[], dict[str, np.ndarray]]  # runs the model with the loaded plugin
    validate: Callable[[dict[str, np.ndarray], Any], ValidationReport]  # (runtime tensors, plan)

    def apply(self, plan: Any, workdir: Path) -> ValidationReport:
        sources = workdir / "sources"
        sources.mkdir(parents=True, exist_ok=True)
        self.render(plan, sources)
        plugin = self.build_plugin(sources, workdir / "build")
        self.load_plugin(plugin)
        return self.validate(self.run_runtime(), plan)


__all__ = ["Attempt", "Reflection", "PluginSteps", "reflect", "Apply"]
