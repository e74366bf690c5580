"""The plan: per module a skill and its knob values, per tensor its GGUF name and GGML type.

A Plan is immutable and JSON-serialisable; ``with_knob`` returns a new plan, so a repair loop can
keep the plan that failed next to the one it tries. The renderer needs nothing but the plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from omnimodel.gguf.types import GGMLType

from .skills import SKILLS

#: ``ModulePlan.params`` key: the knob values the analyzer read from the checkpoint, kept when a knob is
#: overridden (``--knob``) so the reflector can try them first.
STATED_KNOBS = "stated_knobs"
#: ``ModulePlan.params`` key: runtime intermediates a module computes that are not named under its path
#: (an architecture's glue computes "inputs_embeds", "action_hidden_states", ...).
OWNS = "owns"


@dataclass(frozen=True)
class ModulePlan:
    name: str  # PyTorch module path: also the prefix of its weights and of its runtime intermediates
    skill: str  # key of SKILLS
    knobs: dict[str, Any]  # baked into the generated code as constants
    # Structural, non-numerical facts the template needs (layer names, metadata key prefix).
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """C identifier for the module's generated function."""
        return "build_" + "".join(c if c.isalnum() else "_" for c in self.name)


#: The type value of a matrix stored as HBVLA binary planes ("<base>.hb.*" instead of "<name>",
#: omnimodel.quant.hbvla.storage): the shared blocks run it with build_linear_any, and the emulating
#: reference rounds its Haar-domain activation, not its input (validate/numerics.py).
HBVLA = "HBVLA"


@dataclass(frozen=True)
class TensorPlan:
    name: str  # GGUF tensor name (= PyTorch state_dict name)
    shape: tuple[int, ...]
    ggml_type: str  # GGMLType name, e.g. "F16", or HBVLA

    @property
    def is_hbvla(self) -> bool:
        return self.ggml_type == HBVLA

    @property
    def type(self) -> GGMLType:
        if self.is_hbvla:
            raise ValueError(f"{self.name} is stored as HBVLA planes, not one GGML tensor")
        return GGMLType[self.ggml_type]


@dataclass(frozen=True)
class Plan:
    architecture: str  # general.architecture the generated graph registers under
    arch_template: str  # the architecture's glue template, relative to templates/
    outtype: str
    modules: tuple[ModulePlan, ...]
    tensors: tuple[TensorPlan, ...]
    globals: dict[str, Any] = field(default_factory=dict)

    def module(self, name: str) -> ModulePlan:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(f"no module '{name}' in the plan; modules: {[m.name for m in self.modules]}")

    def with_knob(self, module_name: str, knob: str, value: Any) -> Plan:
        """A copy with one knob of one module changed (checked against the skill's schema)."""
        target = self.module(module_name)
        SKILLS[target.skill].knob(knob).check(value)
        mods = tuple(replace(m, knobs={**m.knobs, knob: value}) if m.name == module_name else m for m in self.modules)
        return replace(self, modules=mods)

    def module_for_tensor(self, name: str) -> ModulePlan | None:
        """The module owning a captured intermediate or a weight: the one listing it as its own
        (``params["owns"]``: the architecture glue's ``inputs_embeds``, ``action_hidden_states``...), else
        the longest module path that is ``name`` or a dotted prefix of it
        (``vision_backbone.featurizer.blocks.3`` -> ``vision_backbone.featurizer``); None if neither."""
        for m in self.modules:
            if name in m.params.get(OWNS, ()):
                return m
        best: ModulePlan | None = None
        for m in self.modules:
            if (name == m.name or name.startswith(m.name + ".")) and (best is None or len(m.name) > len(best.name)):
                best = m
        return best

    def with_tensor_types(self, types: dict[str, GGMLType], outtype: str | None = None) -> Plan:
        """A copy with these tensors' GGML types changed (a quantizer's allocation); unknown names fail."""
        known = {t.name for t in self.tensors}
        unknown = sorted(set(types) - known)
        if unknown:
            raise KeyError(f"no tensors {unknown[:3]} in the plan")
        tensors = tuple(replace(t, ggml_type=types[t.name].name) if t.name in types else t for t in self.tensors)
        return replace(self, tensors=tensors, outtype=outtype or self.outtype)

    def with_hbvla(self, names: Iterable[str]) -> Plan:
        """A copy recording these matrices as stored in HBVLA planes (type value ``HBVLA``)."""
        names = set(names)
        unknown = sorted(names - {t.name for t in self.tensors})
        if unknown:
            raise KeyError(f"no tensors {unknown[:3]} in the plan")
        tensors = tuple(replace(t, ggml_type=HBVLA) if t.name in names else t for t in self.tensors)
        return replace(self, tensors=tensors)

    def hbvla_tensors(self) -> list[str]:
        return [t.name for t in self.tensors if t.is_hbvla]

    def tensor_types(self) -> dict[str, GGMLType]:
        """name -> GGML type of every tensor stored as one GGML tensor (HBVLA matrices are not)."""
        return {t.name: t.type for t in self.tensors if not t.is_hbvla}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        return cls(
            architecture=d["architecture"],
            arch_template=d["arch_template"],
            outtype=d["outtype"],
            modules=tuple(ModulePlan(**{**m, "knobs": SKILLS[m["skill"]].with_legacy(m["knobs"])})
                          if m["skill"] in SKILLS else ModulePlan(**m) for m in d["modules"]),
            tensors=tuple(TensorPlan(t["name"], tuple(t["shape"]), t["ggml_type"]) for t in d["tensors"]),
            globals=d.get("globals", {}),
        )


__all__ = ["HBVLA", "ModulePlan", "TensorPlan", "Plan", "OWNS", "STATED_KNOBS"]
