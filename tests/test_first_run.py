"""The first-run friction list of issue 13, item by item: what a new user hit, and now does not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from omnimodel.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bpw", ["40", "0"])
def test_out_of_range_bpw_leaves_no_staging_directory(tmp_path, capsys, bpw):
    out = tmp_path / "demo_out"
    assert main(["convert", "openvla-oft", "--bpw", bpw, "--out", str(out)]) == 2
    assert "--bpw must be in (0, 32]" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "no .demo_out.partial-<pid> may be left behind"


def test_errors_inside_the_staging_directory_name_the_out_path(tmp_path, capsys, monkeypatch):
    from omnimodel.arch.openvla_oft import export
    from omnimodel.errors import GGUFWriteError

    def full_disk(policy, path, *args, **kwargs):
        raise GGUFWriteError(f"{path}: cannot write: No space left on device")

    monkeypatch.setattr(export, "write_gguf", full_disk)
    out = tmp_path / "demo_out"
    assert main(["convert", "openvla-oft", "--demo", "--outtype", "f32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}/model.gguf: cannot write" in err, err
    assert ".partial-" not in err
    assert list(tmp_path.iterdir()) == []


def test_robot_docs_run_the_file_convert_writes():
    from omnimodel.convert import MODEL_FILE

    text = (REPO / "docs" / "robot_integration.md").read_text()
    runs = re.findall(r"control_loop \S+/([\w.-]+\.gguf)", text)
    assert runs and set(runs) == {MODEL_FILE}, runs


def test_inspect_and_bench_count_parameters_alike(tmp_path, capsys):
    """Both report the GGUF's real weights: a row-padded matrix's padding is not a parameter."""
    from omnimodel.gguf import provenance
    from omnimodel.gguf.reader import read_gguf
    from omnimodel.gguf.writer import GGUFModelWriter

    path = tmp_path / "padded.gguf"
    w = np.random.default_rng(0).standard_normal((8, 336)).astype(np.float32)
    from omnimodel.gguf.encoders import encode

    with GGUFModelWriter(path, "omni-mlp") as out:
        blocks = encode(np.pad(w, ((0, 0), (0, 176))), "Q2_K")
        out.add_encoded("layers.0.weight", blocks.tobytes(), "Q2_K", (8, 512), real_width=336)
    gf = read_gguf(path)
    assert provenance.parameter_count(gf.tensors) == 8 * 336
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "parameters:       2,688 " in text and "4,096 stored with row padding" in text
    bench_source = (REPO / "python" / "omnimodel" / "bench.py").read_text()
    assert "parameter_count(read_gguf(" in bench_source  # bench counts through the same function


def test_doctor_covers_every_type_the_allocator_can_pick():
    from omnimodel.cli.doctor_cmd import default_types
    from omnimodel.quant.allocate import DEFAULT_CANDIDATES

    assert {t.name for t in DEFAULT_CANDIDATES} <= set(default_types())
    assert {"Q2_0", "IQ4_NL", "IQ1_M"} <= set(default_types())  # the demo's own types (issue 13)


def test_doctor_runs_the_importance_only_types(tmp_path, capsys):
    assert main(["doctor", "--types", "IQ2_XXS,IQ1_M,Q2_0,IQ4_NL", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") >= 4 and "all checks passed" in out


_BLOCK_SIM = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("metaworld", "mujoco", "pyarrow", "av", "h5py"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


def _without_sim(code: str, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _BLOCK_SIM + code, *args], capture_output=True, text=True, timeout=300)


def test_converting_the_demo_needs_no_sim_extra():
    """The README's first command (convert --bpw 2.5 on the demo) imports none of the [sim] modules:
    everything up to calibration samples from the bundled split, with them made unimportable."""
    proc = _without_sim(
        "from omnimodel.arch.openvla_oft import load_policy\n"
        "from omnimodel.demo_assets import DEMO_POLICY_DIR\n"
        "from omnimodel.quant.pipeline import QuantOptions, load_samples\n"
        "import omnimodel.convert, omnimodel.cli.main, omnimodel.validate.parity\n"
        "policy = load_policy(DEMO_POLICY_DIR)\n"
        "print(len(load_samples(policy, QuantOptions(bpw=2.5))))\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) > 0


@pytest.mark.parametrize("argv", [["collect-demos", "OUT"], ["eval", "--policy", "expert"]])
def test_a_simulator_command_without_the_extra_says_which_to_install(tmp_path, argv):
    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    proc = _without_sim("from omnimodel.cli.main import main\nsys.exit(main(sys.argv[1:]))\n", *argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'omnimodel[sim]'" in lines[0] and "Traceback" not in proc.stderr, lines
