"""`convert --bpw` with the calibration data a real user has (issue 10, item 4).

A LIBERO-platform miniature (two 56 px images, 8-D proprio, 7-D actions) against tiny LeRobot v2.1 / v3.0
datasets and LIBERO HDF5 files (simbench_fixtures: 64 px frames, 8-D state, 7-D actions): the format is
detected and the conversion runs; without --calib, or with data that does not fit, the CLI stops with one
line before anything heavy (loading the weights, generating the graph) runs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from simbench_fixtures import EPISODE_TASK, TASKS, write_lerobot_v21, write_lerobot_v30, write_libero_hdf5

from omnimodel.cli.main import main
from omnimodel.errors import OmnimodelError
from omnimodel.quant.calib_check import CalibMismatchError, PolicyInputs, check_sample
from omnimodel.quant.calib_data import CalibDataError, CalibDataOptions, open_calib_data, select_episodes
from omnimodel.simbench.calib_loaders import load_lerobot_episodes
from omnimodel.simbench.episodes import write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calib_data")
    out = {
        "lerobot-v2.1": write_lerobot_v21(root / "libero_pi", "image").root,
        "lerobot-v3.0": write_lerobot_v30(root / "libero_v3").root,
        "libero-hdf5": write_libero_hdf5(root / "libero_10")[0].parent,
    }
    eps = load_lerobot_episodes(out["lerobot-v2.1"], per_task=None)
    write_dataset(root / "episodes", {"calib": eps}, "libero_goal_no_noops")
    out["episodes"] = root / "episodes"
    return out


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    from omnimodel.arch.openvla_oft import MiniatureSpec, write_miniature

    return write_miniature(tmp_path_factory.mktemp("calib_mini") / "mini", MiniatureSpec())


@pytest.fixture(scope="module")
def mini_two_keys(mini, tmp_path_factory) -> Path:
    """The miniature with statistics for two LIBERO suites, as the combined 4-suite OFT checkpoint has."""
    ckpt = Path(shutil.copytree(mini, tmp_path_factory.mktemp("calib_mini2") / "mini"))
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    entry = next(iter(stats.values()))
    (ckpt / "dataset_statistics.json").write_text(
        json.dumps({"libero_10_no_noops": entry, "libero_goal_no_noops": entry}))
    return ckpt


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Loading the weights or generating the graph fails the test; the run stops with 'stopped here'
    once the calibration checks passed, and records the statistics key it would have loaded with."""
    import omnimodel.convert as conv

    seen: dict[str, object] = {}

    def load_policy(checkpoint, quant=None, unnorm_key=None):
        seen["unnorm_key"] = unnorm_key
        raise conv.ConvertError("stopped here")

    def heavy(*args, **kwargs):
        raise AssertionError("heavy work before the calibration data was checked")

    # a graph tool chain whose every step fails the test: the checks come before any of it
    monkeypatch.setattr(conv, "plugin_chain", lambda: (conv.PluginChain(*[heavy] * 6), ""))
    monkeypatch.setattr(conv, "_load_policy", load_policy)
    return seen


def _convert(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["convert", "openvla-oft", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("omnimodel convert: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Formats, mapping, selection
# --------------------------------------------------------------------------------------------------


def test_formats_are_detected_and_mapped(data) -> None:
    expect = {
        "lerobot-v2.1": ("lerobot v2.1", ("image", "wrist_image"), "state"),
        "lerobot-v3.0": ("lerobot v3.0", ("observation.images.image", "observation.images.wrist_image"),
                         "observation.state"),
        "libero-hdf5": ("libero-hdf5", ("agentview_rgb", "eye_in_hand_rgb"), None),
        "episodes": ("omnimodel-episodes", ("image", "wrist_image"), "proprio"),
    }
    for name, (fmt, cams, state) in expect.items():
        info = open_calib_data(data[name]).info
        assert info.format == fmt and info.cameras == cams, (name, info)
        assert (info.proprio_dim, info.action_dim) == (8, 7), name
        assert state is None or info.state_key == state
        assert set(info.tasks) == set(TASKS)
    assert open_calib_data(data["episodes"]).info.dataset_key == "libero_goal_no_noops"
    # one LIBERO file alone, and the cameras chosen (order as given)
    one = next(data["libero-hdf5"].glob("*.hdf5"))
    src = open_calib_data(one, CalibDataOptions(cameras=("eye_in_hand_rgb", "agentview_rgb")))
    ep = src.load(src.select(1)[0])
    assert ep.camera_names == ("eye_in_hand_rgb", "agentview_rgb") and ep.instruction == TASKS[0]
    with pytest.raises(CalibDataError, match="no camera.*left.*agentview_rgb.*eye_in_hand_rgb"):
        open_calib_data(data["lerobot-v2.1"].parent / "libero_10", CalibDataOptions(cameras=("left",)))


def test_unknown_data_and_inapplicable_options(data, tmp_path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(CalibDataError, match="LeRobot v2.x/v3.0 dataset .* LIBERO \\*_demo.hdf5"):
        open_calib_data(tmp_path / "junk")
    with pytest.raises(CalibDataError, match="not found"):
        open_calib_data(tmp_path / "missing")
    with pytest.raises(CalibDataError, match="--calib-state does not apply to LIBERO HDF5"):
        open_calib_data(data["libero-hdf5"], CalibDataOptions(state_key="x"))
    with pytest.raises(CalibDataError, match="no split 'val'"):
        open_calib_data(data["lerobot-v2.1"], CalibDataOptions(split="val"))
    assert open_calib_data(data["lerobot-v2.1"], CalibDataOptions(split="train")).info.num_episodes == 5


def test_episode_selection_spreads_over_tasks() -> None:
    cands = [(e, TASKS[t]) for e, t in enumerate(EPISODE_TASK)]  # 3 of task 0, 2 of task 1
    assert select_episodes(cands, 5) == [0, 1, 2, 3, 4]  # all: the data's order
    picks = select_episodes(cands, 3, seed=1)
    assert len(set(picks)) == 3 and {EPISODE_TASK[e] for e in picks[:2]} == {0, 1}  # round-robin
    assert picks == select_episodes(list(reversed(cands)), 3, seed=1)
    assert len({tuple(select_episodes(cands, 2, seed=s)) for s in range(10)}) > 1


# --------------------------------------------------------------------------------------------------
# Checks against the checkpoint: one line, before heavy work
# --------------------------------------------------------------------------------------------------


def test_checkpoint_without_calib_is_refused(mini, tmp_path, capsys, no_heavy_work) -> None:
    out = tmp_path / "out"
    rc, _, err = _convert(capsys, "--checkpoint", str(mini), "--bpw", "2.5", "--out", str(out))
    _one_line_error(rc, err, "needs calibration data", "--calib PATH", "LeRobot", "LIBERO")
    from omnimodel.convert import convert_openvla_oft
    from omnimodel.quant.pipeline import QuantOptions

    with pytest.raises(OmnimodelError, match="--calib PATH"):
        convert_openvla_oft(out, checkpoint=mini, quant=QuantOptions(bpw=2.5), log=lambda s: None)
    # RTN on a fixed allocation needs no data: it goes on to load the checkpoint
    alloc = tmp_path / "alloc.txt"
    alloc.write_text("*=Q4_K\n")
    rc, _, err = _convert(capsys, "--checkpoint", str(mini), "--allocation", str(alloc), "--method", "rtn",
                          "--out", str(out))
    _one_line_error(rc, err, "stopped here")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["alloc.txt"]


def test_mismatched_data_one_line_errors(mini, data, capsys, tmp_path, no_heavy_work) -> None:
    from omnimodel.demo_assets import DEMO_CALIB_DIR

    def run(calib: Path, *extra: str) -> tuple[int, str]:
        rc, _, err = _convert(capsys, "--checkpoint", str(mini), "--bpw", "2.5", "--calib", str(calib),
                              "--out", str(tmp_path / "out"), *extra)
        return rc, err

    # the demo's Meta-World episodes (the traceback): proprio 4-D against 8-D
    line = _one_line_error(*run(DEMO_CALIB_DIR), str(DEMO_CALIB_DIR), "proprio 'proprio' is 4-D", "takes 8-D",
                           "libero_miniature_no_noops")
    assert "Traceback" not in line
    lr = data["lerobot-v2.1"]
    _one_line_error(*run(lr, "--calib-cameras", "image"), str(lr), "1 camera(s) (image)", "takes 2 image(s)",
                    "--calib-cameras", "also available: wrist_image")
    _one_line_error(*run(lr, "--calib-state", "actions"), "proprio 'actions' is 7-D", "takes 8-D")
    _one_line_error(*run(lr, "--calib-action", "state"), "actions 'state' are 8-D", "predicts 7-D")
    _one_line_error(*run(lr, "--calib-state", "nope"), "no state feature", "nope")
    # the checks passed: the run went on to load the checkpoint, with its only statistics entry
    rc, err = run(lr)
    _one_line_error(rc, err, "stopped here")
    assert no_heavy_work["unnorm_key"] == "libero_miniature_no_noops"
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_statistics_key(mini_two_keys, data, capsys, tmp_path, no_heavy_work) -> None:
    ckpt = mini_two_keys

    def run(calib: Path, *extra: str) -> tuple[int, str, str]:
        return _convert(capsys, "--checkpoint", str(ckpt), "--bpw", "2.5", "--calib", str(calib),
                        "--out", str(tmp_path / "out"), *extra)

    rc, _, err = run(data["lerobot-v2.1"])  # named libero_pi: neither entry
    _one_line_error(rc, err, "picks none of the 2 statistics entries", "libero_10_no_noops, libero_goal_no_noops",
                    "--unnorm-key")
    rc, _, err = run(data["lerobot-v2.1"], "--unnorm-key", "bridge")
    _one_line_error(rc, err, "--unnorm-key 'bridge'", "no such entry")
    rc, out, err = run(data["lerobot-v2.1"], "--unnorm-key", "libero_goal_no_noops")
    _one_line_error(rc, err, "stopped here")
    assert no_heavy_work["unnorm_key"] == "libero_goal_no_noops" and "statistics 'libero_goal_no_noops'" in out
    # a LIBERO folder named libero_10 picks libero_10_no_noops by itself
    rc, out, err = run(data["libero-hdf5"])
    _one_line_error(rc, err, "stopped here")
    assert no_heavy_work["unnorm_key"] == "libero_10_no_noops" and "matches the calibration data's name" in out
    # an episode dataset declares its key: it must be the one used
    rc, _, err = run(data["episodes"], "--unnorm-key", "libero_10_no_noops")
    _one_line_error(rc, err, "dataset key is 'libero_goal_no_noops'", "statistics 'libero_10_no_noops'")
    rc, _, err = run(data["episodes"])
    _one_line_error(rc, err, "stopped here")
    assert no_heavy_work["unnorm_key"] == "libero_goal_no_noops"


def test_missing_reader_package_is_one_line(mini, data, capsys, tmp_path, monkeypatch, no_heavy_work) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    rc, _, err = _convert(capsys, "--checkpoint", str(mini), "--bpw", "2.5", "--calib", str(data["libero-hdf5"]),
                          "--out", str(tmp_path / "out"))
    _one_line_error(rc, err, "reading LIBERO HDF5 files needs the Python package 'h5py'", "omnimodel[sim]")


def test_sample_checks_note_resizing_gripper_and_ranges(data) -> None:
    """Notes, not errors: another image size, LIBERO's raw gripper, values far outside the statistics."""
    from types import SimpleNamespace as NS

    src = open_calib_data(data["libero-hdf5"])
    ep = src.load(src.select(1)[0])

    def inputs(low, high, mask, size=224) -> PolicyInputs:
        stats = NS(low=np.array(low, float), high=np.array(high, float), mask=np.array(mask, bool))
        return PolicyInputs("ckpt", 2, size, 8, 7, "libero_10_no_noops", stats, None)

    oft = inputs([-1.0] * 6 + [0.0], [1.0] * 7, [True] * 6 + [False])  # OFT's LIBERO statistics: gripper 0..1
    plan = check_sample(src.info, ep, oft)
    assert plan.libero_gripper and any("64x64 are resized to 224x224" in n for n in plan.notes)
    raw = ep.actions[:, -1]
    assert set(np.unique(raw)) == {-1.0, 1.0}
    np.testing.assert_array_equal(plan.apply(ep).actions[:, -1], np.where(raw > 0, 0.0, 1.0))  # -1 open -> 1
    # statistics that put the gripper in [-1, 1] keep the data as it is
    plan = check_sample(src.info, ep, inputs([-1.0] * 7, [1.0] * 7, [True] * 6 + [False], size=64))
    assert not plan.libero_gripper and plan.notes == []
    # a dimension far outside q01..q99 (dim 1 of the fixture's actions is -0.1 * episode) is a warning
    far = inputs([-1.0, 5.0, -1, -1, -1, -1, -1], [1.0, 5.1, 1, 1, 1, 1, 1], [True] * 6 + [False], size=64)
    assert any(n.startswith("WARNING: action dim 1") for n in check_sample(src.info, ep, far).notes)
    # the wrist view first: allowed (the user chose), said
    swapped = open_calib_data(data["libero-hdf5"], CalibDataOptions(cameras=("eye_in_hand_rgb", "agentview_rgb")))
    notes = check_sample(swapped.info, swapped.load(swapped.select(1)[0]), oft).notes
    assert any("first camera 'eye_in_hand_rgb' looks like a wrist view" in n for n in notes)
    with pytest.raises(CalibMismatchError, match="carries 2 image"):
        check_sample(src.info, ep, PolicyInputs("ckpt", 3, 64, 8, 7, "k", oft.action_stats, None))


# --------------------------------------------------------------------------------------------------
# The conversions run
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lerobot-v2.1", "lerobot-v3.0", "libero-hdf5"])
def test_conversion_runs(fmt, mini, mini_two_keys, data, tmp_path, capsys) -> None:
    # LIBERO on the two-key checkpoint: its folder name picks the statistics, which the GGUF records
    # and `omnimodel validate` re-reads (the checkpoint alone would not say which entry)
    ckpt = mini_two_keys if fmt == "libero-hdf5" else mini
    out = tmp_path / "q"
    rc, text, err = _convert(capsys, "--checkpoint", str(ckpt), "--bpw", "2.5", "--calib", str(data[fmt]),
                             "--calib-episodes", "3", "--calib-steps", "2", "--out", str(out))
    assert rc == 0, err
    assert f"({fmt.replace('-v', ' v')})" in text and "[3/10] calibrate" in text
    assert "images 64x64 are resized to 56x56" in text and "3 of 5 episodes x 2 steps" in text
    assert " on 6 samples in 1 pass(es), L1" in text and "convert: parity passed (mixed)" in text
    opts = json.loads((out / "quant_report.json").read_text())["options"]
    assert opts["calib"] == str(data[fmt]) and opts["calib_episodes"] == 3
    from omnimodel.gguf.reader import read_gguf

    key = read_gguf(out / "model.gguf").metadata["openvla-oft.norm_stats.key"]
    if fmt == "libero-hdf5":
        assert key == "libero_10_no_noops"
        assert main(["validate", str(out)]) == 0
    else:
        assert key == "libero_miniature_no_noops"
