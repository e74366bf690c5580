"""The architecture registry: lookup, errors, pi0's clear refusal, and the stages naming no architecture."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import omnimodel
from omnimodel.arch import registry
from omnimodel.cli.main import main
from omnimodel.errors import UsageError

PACKAGE = Path(omnimodel.__file__).resolve().parent


def test_every_family_is_registered_once_by_name() -> None:
    names = registry.names()
    assert {"openvla-oft", "pi0", "pi05"} <= set(names)
    for name in names:
        arch = registry.get(name)
        assert isinstance(arch, registry.Architecture) and arch.name == name
        assert (PACKAGE.parent / Path(*arch.package.split("."))).is_dir(), arch.package
    with pytest.raises(registry.ArchitectureError, match="registered twice"):

        @registry.register
        class Impostor(registry.Architecture):  # noqa: F841  (the decorator is the test)
            name = "openvla-oft"
            package = "omnimodel.arch.nowhere"


def test_unknown_architecture_is_a_usage_error_naming_the_known_ones(capsys) -> None:
    with pytest.raises(registry.UnknownArchitecture, match=r"'nope'.*openvla-oft, pi0, pi05") as e:
        registry.get("nope")
    assert isinstance(e.value, UsageError)
    with pytest.raises(registry.UnknownArchitecture, match="model type 'llama'"):
        registry.for_config({"model_type": "llama"})
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "nope", "--demo"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_families_are_found_from_config_gguf_and_policy(tmp_path: Path) -> None:
    from omnimodel.demo_assets import DEMO_POLICY_DIR
    from omnimodel.gguf import GGUFModelWriter

    oft = registry.get("openvla-oft")
    assert registry.for_config(json.loads((DEMO_POLICY_DIR / "config.json").read_text())) is oft
    assert oft.demo_checkpoint == DEMO_POLICY_DIR
    for arch_name in ("openvla-oft", "omni-test"):
        path = tmp_path / f"{arch_name}.gguf"
        with GGUFModelWriter(path, arch_name) as w:
            w.add_tensor("x.weight", np.zeros((2, 32)), "F32")
        if arch_name == "openvla-oft":
            assert registry.for_gguf(path) is oft
        else:
            with pytest.raises(registry.UnknownArchitecture, match="omni-test"):
                registry.for_gguf(path)


@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_pi0_family_loads_and_runs_its_reference_through_the_registry(tmp_path: Path, name: str) -> None:
    from omnimodel.arch.pi0 import random_observation
    from omnimodel.arch.pi0.miniature import Pi0MiniatureSpec

    arch = registry.get(name)
    ckpt = arch.write_miniature(tmp_path / name)
    assert registry.for_config(json.loads((ckpt / "config.json").read_text())) is arch
    policy = arch.load_policy(ckpt)
    assert registry.for_policy(policy) is arch  # pi0 and pi05 share a package; the kind tells them apart
    assert name in arch.describe_policy(policy)
    images, state = random_observation(Pi0MiniatureSpec(kind=name))
    actions = arch.predict_action(policy, images, "pick up the cube", state, seed=3)
    assert actions.shape == (policy.config.chunk_size, policy.config.action_dim) and np.isfinite(actions).all()
    other = registry.get("pi05" if name == "pi0" else "pi0")
    with pytest.raises(other.checkpoint_error, match=f"a {name} checkpoint, not {other.name}"):
        other.load_policy(ckpt)


@pytest.mark.parametrize("name", ["pi0"])
def test_convert_pi0_refuses_what_it_lacks_in_one_line(tmp_path: Path, name: str, capsys) -> None:
    """pi0 converts (tests/arch/test_pi0_convert.py); what it lacks -- a demo policy (pi0.5 ships one) -- is
    one line, exit 2, before anything is written."""
    from omnimodel.convert import convert

    out = tmp_path / "out"
    assert registry.get(name).missing is None
    assert main(["convert", name, "--demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"omnimodel convert: error: --demo: {name} has no built-in demo policy; give --checkpoint DIR"
    ]
    with pytest.raises(UsageError, match="no built-in demo policy"):
        convert(name, out, demo=True)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_deprecated_convert_alias_is_the_generic_convert() -> None:
    import omnimodel.convert as c

    alias = c.convert_openvla_oft
    assert alias.func is c.convert and alias.args == ("openvla-oft",)
    with pytest.raises(AttributeError):
        c.convert_no_such_arch  # noqa: B018


def test_building_the_cli_imports_no_architecture_package() -> None:
    code = ("import sys; from omnimodel.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('omnimodel.arch.') and m != 'omnimodel.arch.registry'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# The pipeline stages: they must reach every architecture through the registry.
STAGES = ["convert.py", "bench.py", "eval*", "validate/*.py", "quant/pipeline.py", "quant/calibrate.py", "cli/*.py",
          # and what they reach the model through: the analyzer's and planner's dispatch, the quantizers
          "analyze/__init__.py", "plan/__init__.py", "quant/targets.py", "quant/report.py", "quant/fakequant.py",
          "quant/awq.py", "quant/sensitivity.py"]


def _stage_sources() -> list[Path]:
    files = sorted({p for pattern in STAGES for p in PACKAGE.glob(pattern) if p.suffix == ".py"})
    assert len(files) >= 22 and PACKAGE / "convert.py" in files
    return files


def _architecture_words() -> list[str]:
    """Every registered family's name, its words, its title and its package: what a stage must not say."""
    words: set[str] = set()
    for arch in registry.architectures():
        words |= {arch.name, arch.package.rsplit(".", 1)[1], arch.title}
        words |= {w for w in re.split(r"[-_ .]", arch.name) if len(w) >= 3}
    return sorted(w for w in words if w)


def _names_an_architecture(words: list[str]):
    named = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)
    # an arch package is a folder with an architecture.py; the registry and shared helpers are not
    packages = "|".join(sorted(p.parent.name for p in (PACKAGE / "arch").glob("*/architecture.py")))
    arch_import = re.compile(rf"omnimodel\.arch\.({packages})\b|from \.+arch(\.| import )({packages})\b")
    return lambda line: bool(arch_import.search(line) or named.search(line))


def test_pipeline_stages_name_no_architecture() -> None:
    words = _architecture_words()
    assert {"openvla-oft", "openvla", "oft", "openvla_oft", "pi0", "pi05"} <= set(words)
    names_one = _names_an_architecture(words)
    found = []
    for path in _stage_sources():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if names_one(line):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert found == []


def test_the_scan_catches_an_architecture_import() -> None:
    """The scan's patterns on lines a regression would add (the test above must be able to fail)."""
    names_one = _names_an_architecture(_architecture_words())
    for bad in ("from omnimodel.arch.openvla_oft import load_policy", "from ..arch import pi0", "    if arch == 'pi05':",
                "policy: OpenVLAOFTPolicy", "# OFT's L1 loss"):
        assert names_one(bad), bad
    for fine in ("from omnimodel.arch.registry import for_policy", "from omnimodel.arch.weights import swapped_weights", "from ..arch import registry",
                 "softmax over the scores", "spi0n"):
        assert not names_one(fine), fine


def test_convert_refuses_a_checkpoint_of_another_family(tmp_path: Path, capsys) -> None:
    ckpt = registry.get("pi05").write_miniature(tmp_path / "ckpt")
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("a pi05 checkpoint (config.json), not openvla-oft")
    assert not out.exists()


def test_convert_without_calib_says_to_pass_it(tmp_path: Path, capsys) -> None:
    """pi0.5 ships a demo, so without --calib its demo split is tried; for a checkpoint it does not fit, the
    one-line error says to pass --calib, and nothing is written."""
    ckpt = registry.get("pi05").write_miniature(tmp_path / "mini")
    out = tmp_path / "out"
    assert main(["convert", "pi05", "--checkpoint", str(ckpt), "--bpw", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --calib PATH" in err[0], err
    assert not out.exists()
