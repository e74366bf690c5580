"""Named task sets (``--tasks mt9``): they resolve in every command that takes tasks, bad names fail in one
line, and the scripted expert solves every task of the benchmark set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnimodel.simbench.tasks import DEFAULT_TASKS, MT10_TASKS, TASK_SETS, TASKS, parse_tasks


def test_sets_resolve_to_known_tasks_in_order() -> None:
    assert [t.name for t in parse_tasks("default")] == list(DEFAULT_TASKS)
    assert [t.name for t in parse_tasks(None)] == list(DEFAULT_TASKS)
    assert [t.name for t in parse_tasks("mt10")] == list(MT10_TASKS) and len(MT10_TASKS) == 10
    mt9 = [t.name for t in parse_tasks("mt9")]
    assert mt9 == [t for t in MT10_TASKS if t != "peg-insert-side"]
    # a set extends with task names (and Meta-World names), in the given order
    assert [t.name for t in parse_tasks("button-press,mt9")] == ["button-press", *mt9]
    assert [t.name for t in parse_tasks(["mt9", "plate-slide-v3"])][-1] == "plate-slide"
    for name, tasks in TASK_SETS.items():
        assert name not in TASKS, "a set name must not shadow a task"
        assert all(t in TASKS for t in tasks)


def test_instructions_tell_the_tasks_of_a_set_apart() -> None:
    for name in TASK_SETS:
        instructions = [t.instruction for t in parse_tasks(name)]
        assert len(set(instructions)) == len(instructions), name


@pytest.mark.parametrize(
    ("names", "message"),
    [("mt11", "unknown task or task set 'mt11'"), ("mt9,push", "task listed twice: push"), (" , ", "no task given")],
)
def test_bad_names_are_one_line_errors(names: str, message: str) -> None:
    with pytest.raises(KeyError) as e:
        parse_tasks(names)
    text = str(e.value)
    assert message in text and "\n" not in text


def test_commands_take_a_set_name(tmp_path: Path, capsys, monkeypatch, rendering) -> None:
    import omnimodel.simbench.collect as collect
    from omnimodel.cli.main import main

    # collect-demos: the configuration it hands over lists the set's tasks (the collection itself is
    # covered by test_sim_eval; here it would take minutes)
    seen = {}

    def fake_collect(out, cfg, **kwargs):
        seen["tasks"] = cfg.tasks
        raise SystemExit(0)

    monkeypatch.setattr(collect, "collect_demos", fake_collect)
    with pytest.raises(SystemExit):
        main(["collect-demos", str(tmp_path / "d"), "--tasks", "mt9", "--quiet"])
    assert seen["tasks"] == TASK_SETS["mt9"]
    monkeypatch.undo()

    for argv in (
        ["collect-demos", str(tmp_path / "d"), "--tasks", "mt11", "--quiet"],
        ["eval", "--policy", "expert", "--tasks", "mt11", "--quiet"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "unknown task or task set 'mt11'" in err and "\n" not in err

    # eval runs every task of the set (one step each: resolution, not success, is checked here)
    out = tmp_path / "r.json"
    argv = ["eval", "--policy", "expert", "--tasks", "mt9", "--episodes", "1", "--max-steps", "1",
            "--image-size", "16", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result["closed_loop"]["tasks"]) == list(TASK_SETS["mt9"])
    assert result["closed_loop"]["config"]["tasks"] == list(TASK_SETS["mt9"])


def test_expert_solves_every_benchmark_task(rendering) -> None:
    from omnimodel.simbench.evaluate import ClosedLoopConfig, evaluate_closed_loop
    from omnimodel.simbench.experts import ExpertPolicy

    cfg = ClosedLoopConfig(tasks=TASK_SETS["mt9"], episodes_per_task=2, image_size=16)
    result = evaluate_closed_loop(ExpertPolicy(), cfg, progress=False)
    failed = {n: r["successes"] for n, r in result["tasks"].items() if r["successes"] < 2}
    assert not failed, f"expert failed: {failed}"
