"""The Meta-World tasks of the benchmark, with the language instruction the policy is given for each.

Pure data (no MuJoCo import), so command-line tools can list and validate tasks cheaply.

Every task is a Meta-World v3 environment with a hand-coded expert (``metaworld.policies``) and
randomised object/goal positions. Expert success measured here over 20 seeded episodes each (max 300
steps, no action noise): 20/20 for every task in ``TASKS`` except the ones marked in their notes.
``DEFAULT_TASKS`` is the benchmark's set: two contact-rich puck tasks that share one scene and differ
in instruction and goal colour (so language matters), one articulated object and one button.
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
        TaskSpec("reach", "reach-v3", "reach the red goal with the gripper", 150, "expert: ~45 steps"),
        TaskSpec("push", "push-v3", "push the puck to the green goal", 150, "contact-rich; expert ~61 steps"),
        TaskSpec(
            "pick-place",
            "pick-place-v3",
            "pick up the puck and place it at the blue goal",
            150,
            "contact-rich, grasping; expert ~52 steps",
        ),
        TaskSpec("drawer-open", "drawer-open-v3", "open the drawer", 150, "expert ~89 steps"),
        TaskSpec("drawer-close", "drawer-close-v3", "close the drawer", 150, "expert ~78 steps"),
        TaskSpec(
            "button-press-topdown",
            "button-press-topdown-v3",
            "press the button down from the top",
            150,
            "expert ~66 steps",
        ),
        TaskSpec("button-press", "button-press-v3", "press the button forward", 150, "expert ~60 steps"),
        TaskSpec("window-open", "window-open-v3", "slide the window open", 150, "expert ~87 steps"),
        TaskSpec("window-close", "window-close-v3", "slide the window closed", 150, "expert ~81 steps"),
        TaskSpec("plate-slide", "plate-slide-v3", "slide the plate into the goal", 150, "expert ~51 steps"),
        TaskSpec("coffee-push", "coffee-push-v3", "push the mug under the coffee machine", 150, "expert ~55 steps"),
        TaskSpec("door-open", "door-open-v3", "open the door", 200, "expert 18/20: sometimes stalls"),
    )
}

DEFAULT_TASKS: tuple[str, ...] = ("push", "pick-place", "drawer-open", "button-press-topdown")
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


def parse_tasks(names: str | Iterable[str] | None) -> tuple[TaskSpec, ...]:
    """Comma-separated names (or a list) -> specs, in the given order; None -> ``DEFAULT_TASKS``."""
    if names is None:
        names = DEFAULT_TASKS
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    specs = tuple(get_task(n) for n in names)
    if not specs:
        raise KeyError("no task given")
    seen = [s.name for s in specs]
    if len(set(seen)) != len(seen):
        raise KeyError(f"task listed twice in {seen}")
    return specs


__all__ = ["TaskSpec", "TASKS", "DEFAULT_TASKS", "DEFAULT_DATASET_KEY", "get_task", "parse_tasks"]
