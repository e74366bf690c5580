"""Meta-World's hand-coded experts (``metaworld.policies``), as demonstrators and as a closed-loop policy.

An expert reads the privileged 39-D state (hand, object and goal positions), never the images, and
returns one 4-D action clipped to the env's [-1, 1] box (the raw expert output can exceed it: its
P-controllers have gains of 10-25; recording the clipped action records what was executed).

``ExpertPolicy`` adapts an expert to the evaluator's policy interface: it has no use for the images and
instead reads the state of the simulator it is attached to at each episode start, so the evaluator can
be checked against a policy known to succeed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .tasks import TaskSpec, get_task

if TYPE_CHECKING:
    from .sim import MetaWorldSim


class ScriptedExpert:
    """state (39,) -> action (4,) float32 in [-1, 1]."""

    def __init__(self, task: TaskSpec | str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.task = get_task(task) if isinstance(task, str) else task
        if self.task.env_name not in ENV_POLICY_MAP:
            raise KeyError(f"Meta-World has no scripted policy for {self.task.env_name}")
        self._policy = ENV_POLICY_MAP[self.task.env_name]()

    def __call__(self, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # metaworld.policies.move() warns whenever its P-controller saturates: nearly every step.
            warnings.simplefilter("ignore")
            action = self._policy.get_action(np.asarray(state, dtype=np.float64))
        return np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0).astype(np.float32)


class ExpertPolicy:
    """The scripted expert behind the evaluator's ``policy(images, instruction, proprio)`` interface.

    Privileged: ``begin_episode(sim)`` (called by the evaluator after every reset) gives it the simulator
    whose state it reads. Returns a chunk of one action, so it re-plans every step.
    """

    privileged = True

    def __init__(self) -> None:
        self._sim: MetaWorldSim | None = None
        self._expert: ScriptedExpert | None = None

    def begin_episode(self, sim: MetaWorldSim) -> None:
        if self._expert is None or self._expert.task != sim.task:
            self._expert = ScriptedExpert(sim.task)
        self._sim = sim

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray:
        if self._sim is None or self._expert is None:
            raise RuntimeError("ExpertPolicy needs begin_episode(sim) before it is called")
        return self._expert(self._sim.last_state)[None]

    def describe(self) -> dict[str, object]:
        return {"kind": "metaworld-expert", "privileged": True, "chunk": 1, "action_dim": 4}


__all__ = ["ScriptedExpert", "ExpertPolicy"]
