"""The Meta-World tasks of the benchmark, with the language instruction the policy is given for each.

Pure data (no MuJoCo import), so command-line tools can list and validate tasks cheaply.

Every task is a Meta-World v3 environment with a hand-coded expert (``metaworld.policies``) and
randomised object/goal positions. Expert success and mean steps in the notes: 20 episodes each on the
closed-loop evaluation seeds (2,000,000 + i), within the task's step budget, no action noise
(docs/simbench.md has the table, also with DART noise 0.1).
``DEFAULT_TASKS`` is the benchmark's set: two contact-rich puck tasks that share one scene and differ
in instruction and goal colour (so language matters), one articulated object and one button.

``TASK_SETS`` names sets that every ``--tasks`` option accepts beside task names (``--tasks mt9``, or
``--tasks mt9,button-press`` to extend one): ``default`` (= ``DEFAULT_TASKS``), ``mt10`` (Meta-World's
MT10 as published) and ``mt9``, the wider benchmark set of issue #14: MT10 without peg-insert-side, whose
own expert fails 3 of 20 layouts. Tasks sharing a scene are told apart by their instruction only
(reach / push / pick-place: one puck scene, goal colours differ; drawer-open / -close; window-open /
-close), so the policy has to read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str  # our short key, used in file names and reports
    env_name: str  # Meta-World v3 environment name
    instruction: str  # what the policy is told (lower case, no final period, as LIBERO's)
    max_steps: int  # closed-loop step budget; the expert needs well under it (Meta-World's cap is 500)
    notes: str = ""


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("reach", "reach-v3", "reach the red goal with the gripper", 150, "expert 20/20, ~48 steps"),
        TaskSpec("push", "push-v3", "push the puck to the green goal", 150, "contact-rich; expert 20/20, ~63 steps"),
        TaskSpec(
            "pick-place",
            "pick-place-v3",
            "pick up the puck and place it at the blue goal",
            150,
            "contact-rich, grasping; expert 20/20, ~54 steps",
        ),
        TaskSpec("drawer-open", "drawer-open-v3", "open the drawer", 150, "expert 20/20, ~89 steps"),
        TaskSpec("drawer-close", "drawer-close-v3", "close the drawer", 150, "expert 20/20, ~78 steps"),
        TaskSpec(
            "button-press-topdown",
            "button-press-topdown-v3",
            "press the button down from the top",
            150,
            "expert 20/20, ~68 steps",
        ),
        TaskSpec("button-press", "button-press-v3", "press the button forward", 150, "expert 20/20, ~61 steps"),
        TaskSpec("window-open", "window-open-v3", "slide the window open", 150, "expert 20/20, ~89 steps"),
        TaskSpec("window-close", "window-close-v3", "slide the window closed", 150, "expert 20/20, ~82 steps"),
        TaskSpec("plate-slide", "plate-slide-v3", "slide the plate into the goal", 150, "expert 20/20, ~51 steps"),
        TaskSpec("coffee-push", "coffee-push-v3", "push the mug under the coffee machine", 150, "expert 20/20, ~55 steps"),
        TaskSpec("door-open", "door-open-v3", "open the door", 200, "expert 19/20, ~80 steps: sometimes stalls"),
        TaskSpec(
            "peg-insert-side",
            "peg-insert-side-v3",
            "insert the peg into the hole from the side",
            200,
            "grasping + precise insertion; expert 17/20, ~108 steps (up to 182): not in mt9",
        ),
    )
}

DEFAULT_TASKS: tuple[str, ...] = ("push", "pick-place", "drawer-open", "button-press-topdown")

# Meta-World's MT10 benchmark, in its published order.
MT10_TASKS: tuple[str, ...] = (
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
)

TASK_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_TASKS,
    "mt10": MT10_TASKS,
    # issue #14's benchmark: MT10 less the one task whose scripted expert is unreliable (17/20)
    "mt9": tuple(t for t in MT10_TASKS if t != "peg-insert-side"),
}
# Key of the demonstrations in dataset_statistics.json. It must contain "metaworld": the OFT checkpoint
# loader picks the platform constants (chunk length, normalisation) from the key.
DEFAULT_DATASET_KEY = "metaworld_oft_bench"


def get_task(name: str) -> TaskSpec:
    """Look a task up by our short name or by its Meta-World environment name."""
    if name in TASKS:
        return TASKS[name]
    for spec in TASKS.values():
        if spec.env_name == name:
            return spec
    raise KeyError(f"unknown task '{name}'; known: {', '.join(TASKS)}")


def _expand(names: Iterable[str]) -> list[TaskSpec]:
    """Each item a task (short or Meta-World name) or a ``TASK_SETS`` name, sets replaced by their tasks."""
    out: list[TaskSpec] = []
    for name in names:
        if name in TASK_SETS:
            out.extend(get_task(t) for t in TASK_SETS[name])
            continue
        try:
            out.append(get_task(name))
        except KeyError:
            raise KeyError(f"unknown task or task set '{name}'; sets: {', '.join(TASK_SETS)}; "
                           f"tasks: {', '.join(TASKS)}") from None
    return out


def parse_tasks(names: str | Iterable[str] | None) -> tuple[TaskSpec, ...]:
    """Comma-separated names (or a list) of tasks and task sets -> specs, in the given order;
    None -> ``DEFAULT_TASKS``."""
    if names is None:
        names = DEFAULT_TASKS
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    specs = tuple(_expand(names))
    if not specs:
        raise KeyError("no task given")
    seen = [s.name for s in specs]
    dups = sorted({n for n in seen if seen.count(n) > 1})
    if dups:
        raise KeyError(f"task listed twice: {', '.join(dups)}")
    return specs


__all__ = ["TaskSpec", "TASKS", "DEFAULT_TASKS", "MT10_TASKS", "TASK_SETS", "DEFAULT_DATASET_KEY", "get_task", "parse_tasks"]
