"""Meta-World environment wrapper: seeded resets, two rendered cameras, proprio, 4-D actions.

    with MetaWorldSim("push", SimConfig(image_size=84)) as sim:
        obs = sim.reset(seed=7)            # same seed -> same object and goal positions, same pixels
        obs.images                         # (third_person, gripper): uint8 (84, 84, 3) each
        obs.proprio                        # float32 (4,): hand x, y, z (m), gripper opening (0..1)
        step = sim.step(np.array([0.1, 0.0, -0.2, 0.0]))
        step.success, step.observation

Observation (what a policy sees), as OFT on LIBERO sees it: two RGB images, third-person first, then a
view that moves with the gripper; and a proprio vector:

    proprio[0:3]  world position (metres) of the Sawyer's "hand" body = Meta-World obs[0:3]
    proprio[3]    finger opening: distance between the two claw bodies / 0.1 m, clipped to [0, 1]
                  (1 = fully open) = Meta-World obs[3]
    proprio[4:7]  only with ``SimConfig(proprio=GOAL_PROPRIO_NAMES)``: the task's goal position (metres) =
                  Meta-World's goal-observable obs[36:39]. Reach, push and pick-place draw their goal in 3-D
                  at every reset and show it only as a 1-2 px marker at 56 px, so a policy that is to reach
                  it must be told where it is, as Meta-World's own state observation tells its agents.
    proprio[7:10] only with ``SimConfig(proprio=OBJECT_PROPRIO_NAMES)``: the task object's position (metres) =
                  Meta-World's obs[4:7] (the puck; the door, drawer or window handle; the button). The puck
                  is a ~3 px blob at 56 px that a small policy does not learn to locate from the pixels.

Action (4-D, each in [-1, 1]; the env clips): ``[dx, dy, dz, grip]``. ``dx..dz`` move the mocap target
by 1 cm per unit per step; ``grip`` is the finger actuator effort (> 0 closes, < 0 opens).
``Observation.state`` additionally carries Meta-World's 39-D state vector (object and goal positions):
privileged, for the scripted experts only -- policies under test get at most its goal and first object (above).

Cameras are MuJoCo free cameras (look-at point, distance, azimuth, elevation), not cameras of the
Meta-World model: the model's own cameras either miss the small objects or sit inside the arm at some
hand positions. The gripper view's look-at point follows the gripper's tool centre (the hand never
rotates in Meta-World, so a translating camera is a gripper-mounted camera). Shadows, reflections and
multisampling are off: with Mesa's software renderer a 4096^2 shadow map made a frame ~20x slower and
changed little at this resolution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .rendering import backend_in_force, configure_mujoco_gl
from .tasks import TaskSpec, get_task

configure_mujoco_gl()

import mujoco  # noqa: E402  (after the GL backend is chosen)

PROPRIO_NAMES: tuple[str, ...] = ("hand_x", "hand_y", "hand_z", "gripper_open")
GOAL_PROPRIO_NAMES: tuple[str, ...] = PROPRIO_NAMES + ("goal_x", "goal_y", "goal_z")
OBJECT_PROPRIO_NAMES: tuple[str, ...] = GOAL_PROPRIO_NAMES + ("obj_x", "obj_y", "obj_z")
# where each proprio value sits in Meta-World's 39-D goal-observable observation
_STATE_INDEX = {"hand_x": 0, "hand_y": 1, "hand_z": 2, "gripper_open": 3, "goal_x": 36, "goal_y": 37, "goal_z": 38,
                "obj_x": 4, "obj_y": 5, "obj_z": 6}
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "grip")
STATE_DIM = 39  # Meta-World v3 observation vector (goal observable)
# Meta-World raises once an episode reaches this many steps (``SawyerXYZEnv.max_path_length``).
METAWORLD_MAX_STEPS = 500


@dataclass(frozen=True)
class CameraSpec:
    name: str
    lookat: tuple[float, float, float]  # world point; an offset from the gripper if follow_gripper
    distance: float  # metres from the look-at point
    azimuth: float  # degrees
    elevation: float  # degrees (negative looks down)
    follow_gripper: bool = False


THIRD_PERSON = CameraSpec("third_person", lookat=(0.0, 0.65, 0.1), distance=1.0, azimuth=-120.0, elevation=-35.0)
GRIPPER = CameraSpec(
    "gripper", lookat=(0.0, 0.08, -0.08), distance=0.35, azimuth=150.0, elevation=-45.0, follow_gripper=True
)


@dataclass(frozen=True)
class SimConfig:
    # Square images. A multiple of the ViT patch (14) lets the policy use them unresized: 56, 84, 112.
    image_size: int = 84
    cameras: tuple[CameraSpec, ...] = (THIRD_PERSON, GRIPPER)
    proprio: tuple[str, ...] = PROPRIO_NAMES  # or GOAL_PROPRIO_NAMES

    def __post_init__(self) -> None:
        unknown = [n for n in self.proprio if n not in _STATE_INDEX]
        if unknown:
            raise ValueError(f"unknown proprio value(s) {unknown}; known: {', '.join(_STATE_INDEX)}")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)


@dataclass(frozen=True)
class Observation:
    images: tuple[np.ndarray, ...]  # one uint8 (H, W, 3) per camera, SimConfig.cameras order
    proprio: np.ndarray  # float32 (P,), SimConfig.proprio (PROPRIO_NAMES by default)
    state: np.ndarray = field(repr=False)  # float64 (39,), privileged (experts only)


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    success: bool  # Meta-World's task success at this step
    reward: float


class MetaWorldSim:
    """One Meta-World task with rendering. Not thread-safe; one OpenGL context per instance."""

    def __init__(self, task: TaskSpec | str, config: SimConfig | None = None) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task = get_task(task) if isinstance(task, str) else task
        self.config = config or SimConfig()
        if self.task.max_steps > METAWORLD_MAX_STEPS:
            raise ValueError(f"{self.task.name}: max_steps {self.task.max_steps} > Meta-World's {METAWORLD_MAX_STEPS}")
        env_cls = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.task.env_name}-goal-observable"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # seed=0 keeps construction (which resets once from numpy's global RNG) reproducible.
            self._env = env_cls(seed=0)
        # Draw each reset's object/goal positions from the env's own RNG, which reset(seed) reseeds;
        # by default Meta-World freezes one layout per task.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.model.vis.quality.offsamples = 0
        size = self.config.image_size
        self._renderer = mujoco.Renderer(self._env.model, height=size, width=size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._cameras = [self._free_camera(c) for c in self.config.cameras]
        self._proprio_index = [_STATE_INDEX[n] for n in self.config.proprio]
        self._steps = 0
        self._started = False
        self._last_state: np.ndarray | None = None

    @staticmethod
    def _free_camera(spec: CameraSpec) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = spec.lookat
        cam.distance = spec.distance
        cam.azimuth = spec.azimuth
        cam.elevation = spec.elevation
        return cam

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def last_state(self) -> np.ndarray:
        """Meta-World's 39-D state after the last reset/step (privileged: for experts)."""
        if self._last_state is None:
            raise RuntimeError("call reset(seed) first")
        return self._last_state

    @property
    def render_backend(self) -> str:
        return backend_in_force()

    def render(self) -> tuple[np.ndarray, ...]:
        tcp = np.asarray(self._env.tcp_center, dtype=np.float64)
        images = []
        for spec, cam in zip(self.config.cameras, self._cameras, strict=True):
            if spec.follow_gripper:
                cam.lookat[:] = tcp + np.asarray(spec.lookat)
            self._renderer.update_scene(self._env.data, camera=cam)
            images.append(self._renderer.render().copy())
        return tuple(images)

    def _observe(self, state: np.ndarray) -> Observation:
        state = np.asarray(state, dtype=np.float64).copy()
        self._last_state = state
        return Observation(images=self.render(), proprio=state[self._proprio_index].astype(np.float32), state=state)

    def reset(self, seed: int) -> Observation:
        """New episode; the object/goal layout and everything after it are a function of ``seed``."""
        self._env.seed(int(seed))
        state, _ = self._env.reset()
        # Meta-World moves the goal by editing the model (site_pos) at reset, but the site's world
        # position is only recomputed by the next step: without this, frame 0 shows the goal where
        # the previous episode had it (history-dependent pixels). Kinematics only; the state is untouched.
        mujoco.mj_forward(self._env.model, self._env.data)
        self._steps = 0
        self._started = True
        return self._observe(state)

    def step(self, action: np.ndarray) -> StepResult:
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,):
            raise ValueError(f"Meta-World actions are 4-D [dx, dy, dz, grip], got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"non-finite action {a.tolist()}")
        if self._steps >= METAWORLD_MAX_STEPS:
            raise RuntimeError(f"episode already has {METAWORLD_MAX_STEPS} steps (Meta-World's limit)")
        state, reward, _terminated, _truncated, info = self._env.step(np.clip(a, -1.0, 1.0).astype(np.float32))
        self._steps += 1
        return StepResult(self._observe(state), bool(info["success"]), float(reward))

    def close(self) -> None:
        # Free the GL context explicitly: left to the garbage collector at interpreter exit, EGL
        # teardown runs after its library state is gone and prints spurious errors.
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> MetaWorldSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def proprio_names_for(dim: int | None) -> tuple[str, ...]:
    """The state a policy with a ``dim``-D proprio input was trained on: 7 is hand + gripper + goal
    (``collect-demos --goal-state``), 10 adds the object (``--object-state``); anything else gets the
    default 4-D state, as before those options (a family that pads its state, or takes none, ignores what
    it does not use)."""
    for names in (GOAL_PROPRIO_NAMES, OBJECT_PROPRIO_NAMES):
        if dim == len(names):
            return names
    return PROPRIO_NAMES


__all__ = [
    "PROPRIO_NAMES",
    "GOAL_PROPRIO_NAMES",
    "OBJECT_PROPRIO_NAMES",
    "proprio_names_for",
    "ACTION_NAMES",
    "STATE_DIM",
    "METAWORLD_MAX_STEPS",
    "CameraSpec",
    "THIRD_PERSON",
    "GRIPPER",
    "SimConfig",
    "Observation",
    "StepResult",
    "MetaWorldSim",
]
