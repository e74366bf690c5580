"""The reflector loop with fake plan / render / build / runtime steps."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omnimodel.validate.compare import Tolerance, compare_all
from omnimodel.validate.reflector import PluginSteps, reflect
from omnimodel.validate.report import ValidationReport

TOL = Tolerance(k=3.0, floor=1e-6, action_floor=1e-6)
ORDER = ["vit.blocks.0", "vit.blocks.1", "llm.layers.0", "head"]
OWNER = {"vit.blocks.0": "vit", "vit.blocks.1": "vit", "llm.layers.0": "llm", "head": "head"}
RNG = np.random.default_rng(0)
REFERENCE = {n: RNG.standard_normal(64) for n in ORDER}


@dataclass(frozen=True)
class FakeModule:
    name: str
    skill: str
    knobs: dict[str, Any]


@dataclass(frozen=True)
class FakePlan:
    knobs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"vit": {"gelu": "tanh"}, "llm": {"eps": 1e-5}, "head": {}}
    )

    def with_knob(self, module: str, knob: str, value: Any) -> FakePlan:
        knobs = {m: dict(k) for m, k in self.knobs.items()}
        knobs[module][knob] = value
        return replace(self, knobs=knobs)

    def module_for_tensor(self, name: str) -> FakeModule | None:
        m = OWNER.get(name)
        return FakeModule(m, f"{m}_skill", self.knobs[m]) if m else None


@dataclass
class Skill:
    fixes: list[dict[str, Any]]


class FakeRuntime:
    """Stands in for render -> build -> load -> run: the 'graph' is the plan's knobs, and a module whose
    knobs are not the correct ones corrupts its tensors and everything after them."""

    def __init__(self, correct: dict[str, dict[str, Any]]) -> None:
        self.correct = correct
        self.loaded: FakePlan | None = None
        self.calls: list[str] = []
        self.validated: list[FakePlan] = []  # the plan each validation judged (the references follow it)

    def render(self, plan: FakePlan, out: Path) -> list[Path]:
        self.calls.append("render")
        (out / "graph.txt").write_text(repr(plan.knobs))
        return [out / "graph.txt"]

    def build(self, sources: Path, build: Path) -> Path:
        self.calls.append("build")
        if "broken" in (sources / "graph.txt").read_text():
            raise RuntimeError("compile error: broken template")
        build.mkdir(parents=True, exist_ok=True)
        so = build / "plugin.so"
        so.write_text((sources / "graph.txt").read_text())
        return so

    def load(self, path: Path) -> None:
        self.calls.append("load")
        self.loaded = eval(path.read_text())  # noqa: S307  (our own repr)

    def run(self) -> dict[str, np.ndarray]:
        self.calls.append("run")
        out, broken = {}, False
        for name in ORDER:
            m = OWNER[name]
            broken = broken or any(self.loaded[m].get(k) != v for k, v in self.correct[m].items())
            out[name] = REFERENCE[name] + (0.3 if broken else 0.0) * RNG.standard_normal(64)
        return out

    def validate(self, tensors: dict[str, np.ndarray], plan: FakePlan) -> ValidationReport:
        self.validated.append(plan)
        results, unmatched = compare_all(tensors, REFERENCE, TOL, noise={n: 1e-3 for n in REFERENCE})
        return ValidationReport("f32", TOL, results, unmatched, graph="plugin:fake")

    def steps(self) -> PluginSteps:
        return PluginSteps(self.render, self.build, self.load, self.run, self.validate)


def first_report(rt: FakeRuntime, plan: FakePlan, tmp: Path) -> ValidationReport:
    return rt.steps().apply(plan, tmp / "initial")


SKILLS = {
    "vit_skill": Skill([{"gelu": "tanh"}, {"gelu": "broken"}, {"gelu": "erf"}]),
    "llm_skill": Skill([{"eps": 1e-6}, {"eps": 1e-5}]),
    "head_skill": Skill([]),
}


def test_already_passing_makes_no_attempt(tmp_path) -> None:
    rt = FakeRuntime({"vit": {"gelu": "tanh"}, "llm": {"eps": 1e-5}, "head": {}})
    plan = FakePlan()
    rep = first_report(rt, plan, tmp_path)
    res = reflect(plan, rep, SKILLS, rt.steps().apply, workdir=tmp_path)
    assert res.passed and res.attempts == [] and res.summary() == "passes as generated"


def test_fault_fixed_on_second_try(tmp_path) -> None:
    # erf is right; the plan generated tanh. The fixes: tanh (skipped: that is what failed), a variant
    # that does not compile (a failed try, recorded), then erf, which passes.
    rt = FakeRuntime({"vit": {"gelu": "erf"}, "llm": {"eps": 1e-5}, "head": {}})
    plan = FakePlan()
    rep = first_report(rt, plan, tmp_path)
    assert rep.first_failure.name == "vit.blocks.0"
    res = reflect(plan, rep, SKILLS, rt.steps().apply, workdir=tmp_path / "reflect")
    assert res.passed
    assert [a.knobs for a in res.attempts] == [{"gelu": "broken"}, {"gelu": "erf"}]
    assert "compile error" in res.attempts[0].error
    assert res.attempts[1].passed and res.attempts[1].tensor_ratio < 1
    assert rt.validated[-1] == res.plan  # validation is told which plan it judges
    assert res.accepted == [res.attempts[1]] and res.plan.knobs["vit"]["gelu"] == "erf"
    assert res.report.passed and res.workdir == tmp_path / "reflect" / "attempt-2"
    assert (res.workdir / "build" / "plugin.so").is_file()
    assert "gelu='erf'" in res.summary()
    assert rt.loaded["vit"]["gelu"] == "erf"  # the accepted plugin is the one loaded


def test_two_independent_faults_are_both_repaired(tmp_path) -> None:
    rt = FakeRuntime({"vit": {"gelu": "erf"}, "llm": {"eps": 1e-6}, "head": {}})
    plan = FakePlan()
    res = reflect(plan, first_report(rt, plan, tmp_path), SKILLS, rt.steps().apply, workdir=tmp_path / "r")
    assert res.passed
    assert [(a.module, a.knobs) for a in res.accepted] == [("vit", {"gelu": "erf"}), ("llm", {"eps": 1e-6})]
    assert res.accepted[0].first_failure == "llm.layers.0"  # progress: the failure moved later


def test_nothing_fixes_gives_diagnosis_listing_tries(tmp_path) -> None:
    rt = FakeRuntime({"vit": {"gelu": "quick"}, "llm": {"eps": 1e-5}, "head": {}})
    plan = FakePlan()
    rep = first_report(rt, plan, tmp_path)
    res = reflect(plan, rep, SKILLS, rt.steps().apply, workdir=tmp_path / "r")
    assert not res.passed and res.accepted == []
    d = res.diagnosis
    assert "first failing tensor vit.blocks.0" in d and "module vit (skill vit_skill" in d
    assert "gelu='broken'" in d and "compile error" in d and "gelu='erf'" in d and "tried 2 fix(es)" in d
    assert "none passes" in d
    assert not res.report.passed  # never a silent pass
    d2 = res.to_dict()
    assert d2["passed"] is False and len(d2["attempts"]) == 2 and d2["attempts"][1]["tensor_ratio"] > 1


def test_unowned_tensor_and_skill_without_fixes(tmp_path) -> None:
    rt = FakeRuntime({"vit": {"gelu": "tanh"}, "llm": {"eps": 1e-5}, "head": {"x": 1}})
    plan = FakePlan()
    res = reflect(plan, first_report(rt, plan, tmp_path), SKILLS, rt.steps().apply, workdir=tmp_path / "r")
    assert not res.passed and "first failing tensor head" in res.diagnosis and "no known fixes" in res.diagnosis

    class NoOwner(FakePlan):
        def module_for_tensor(self, name: str):
            return None

    rt2 = FakeRuntime({"vit": {"gelu": "erf"}, "llm": {"eps": 1e-5}, "head": {}})
    rep = first_report(rt2, NoOwner(), tmp_path / "b")
    res = reflect(NoOwner(), rep, SKILLS, rt2.steps().apply, workdir=tmp_path / "r2")
    assert not res.passed and "not computed by any plan module" in res.diagnosis


def test_the_value_the_checkpoint_states_is_tried_first(tmp_path) -> None:
    """A module's stated knobs (what the analyzer read, kept through an override) come before the
    skill's generic fixes, so a knob override or a template that lost the config's value is undone in
    one attempt."""
    from omnimodel.plan.skills import SKILLS as REAL_SKILLS

    @dataclass(frozen=True)
    class StatedModule(FakeModule):
        params: dict[str, Any] = field(default_factory=dict)

    class StatedPlan(FakePlan):
        def module_for_tensor(self, name: str):
            if OWNER.get(name) != "llm":
                return super().module_for_tensor(name)
            return StatedModule("llm", "llama_stack", self.knobs["llm"], {"stated_knobs": {"rope_theta": 100000.0}})

    class ThetaRuntime(FakeRuntime):
        def run(self) -> dict[str, np.ndarray]:
            self.calls.append("run")
            out, broken = {}, False
            for name in ORDER:
                broken = broken or (OWNER[name] == "llm" and self.loaded["llm"].get("rope_theta") != 100000.0)
                out[name] = REFERENCE[name] + (0.3 if broken else 0.0) * RNG.standard_normal(64)
            return out

    plan = StatedPlan(knobs={"vit": {"gelu": "tanh"}, "llm": {"rope_theta": 10000.0}, "head": {}})
    rt = ThetaRuntime({})
    rep = first_report(rt, plan, tmp_path)
    assert rep.first_failure.name == "llm.layers.0"
    res = reflect(plan, rep, {**SKILLS, "llama_stack": REAL_SKILLS["llama_stack"]}, rt.steps().apply,
                  workdir=tmp_path / "r")
    assert res.passed and [a.knobs for a in res.attempts] == [{"rope_theta": 100000.0}]
