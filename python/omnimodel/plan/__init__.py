"""Planner: ModelDescription -> Plan (a skill + knobs per module, a GGML type per tensor).

    from omnimodel.plan import make_plan
    plan = make_plan(desc, outtype="f16")
    plan = plan.with_knob("vision_backbone.featurizer", "gelu", "tanh")   # a new plan
"""

from __future__ import annotations

from dataclasses import replace

from omnimodel.analyze.description import ModelDescription

from .plan import OWNS, STATED_KNOBS, ModulePlan, Plan, TensorPlan
from .skills import SKILLS
from .types import OUTTYPES, tensor_type


def make_plan(desc: ModelDescription, outtype: str = "f32") -> Plan:
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}, got {outtype!r}")
    from omnimodel.arch import registry

    try:
        spec = registry.get(desc.architecture).plan_spec()
    except registry.ArchitectureError as e:
        raise ValueError(f"no arch spec for architecture '{desc.architecture}' ({e})") from e
    modules = spec.module_plans(desc)
    for m in modules:
        SKILLS[m.skill].validate(m.knobs)
    # what the checkpoint states, kept through later overrides for the reflector to try first
    modules = tuple(replace(m, params={**m.params, STATED_KNOBS: dict(m.knobs)}) for m in modules)
    tensors = tuple(TensorPlan(t.name, tuple(t.shape), tensor_type(t.name, t.shape, outtype).name) for t in desc.tensors)
    return Plan(desc.architecture, spec.ARCH_TEMPLATE, outtype, modules, tensors, dict(desc.globals))


__all__ = ["make_plan", "Plan", "ModulePlan", "TensorPlan", "SKILLS"]
