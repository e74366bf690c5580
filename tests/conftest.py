"""Session fixtures shared by tests/arch and tests/pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class GeneratedPlugin:
    """The OpenVLA-OFT miniature's graph, analyzed, planned, rendered, built and loaded (F32 plan)."""

    checkpoint: Path
    plan: object  # omnimodel.plan.Plan
    sources: Path
    library: Path

    def reload(self) -> None:
        """Re-register this (correct) graph, e.g. after a test loaded a wrong-knob plugin."""
        from omnimodel import _runtime

        _runtime.load_plugin(self.library)


@pytest.fixture(scope="session")
def generated_oft_plugin(tmp_path_factory) -> GeneratedPlugin:
    """Once per session: from then on the runtime's ``openvla-oft`` graph is the generated one."""
    from omnimodel import _runtime  # a broken build must fail these tests, not skip them
    from omnimodel.analyze import analyze
    from omnimodel.arch.openvla_oft import MiniatureSpec, write_miniature
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render
    from omnimodel.plan import make_plan

    root = tmp_path_factory.mktemp("generated_oft")
    ckpt = write_miniature(root / "mini", MiniatureSpec(seed=0))
    plan = make_plan(analyze(ckpt), "f32")
    render(plan, root / "src")
    lib = build_plugin(root / "src", root / "build", verbose=False)
    _runtime.load_plugin(lib)
    return GeneratedPlugin(Path(ckpt), plan, root / "src", lib)
