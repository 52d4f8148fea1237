"""DeepMind Control from pixels: rendering, action repeat, frame stacking and ground-truth landmarks.

`DMCEnv` is the only environment the training loop talks to. It wraps a dm_control suite task and returns
`Step` tuples holding uint8 channels-first frames rendered from a fixed camera, the reward summed over
`action_repeat` physics control steps, and the bootstrapping flags the agent needs (a DMC time limit is a
truncation, not a termination). Each `Step` also carries the 2-D pixel positions of named 3-D points of the
scene (`landmarks`), used to evaluate learned keypoints by regression onto ground truth.

Pixel coordinate convention (used by `landmarks` and `project_points`): (x, y) with x growing to the right
(image columns) and y growing downwards (image rows); the origin is the top-left corner of the top-left
pixel, so pixel ``frame[:, i, j]`` covers x in [j, j + 1) and y in [i, i + 1), and
``frame[:, int(y), int(x)]`` is the pixel containing a point. dm_control's ``Camera.matrix`` places integer
coordinates at pixel *centres*, so `project_points` adds 0.5 to it; this was verified against segmentation
renders (the projected corners of the cartpole cart's front face reproduce its rendered mask pixel for pixel,
see ``tests/test_env.py``).
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kprl.errors import KprlError, first_line

try:
    from dm_control import suite
    from dm_control.mujoco import engine
    from dm_control.rl import control
except (ImportError, RuntimeError, OSError, AttributeError) as exc:
    # dm_control picks its OpenGL backend from MUJOCO_GL when imported: a wrong value or a missing library fails
    # here, deep inside PyOpenGL. Say what to do instead.
    first = first_line(exc)
    raise KprlError(
        f"dm_control cannot start its renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r} ({first}); "
        "use MUJOCO_GL=egl (libEGL, e.g. Debian's libegl1) or MUJOCO_GL=osmesa (libosmesa6), then `kprl doctor`"
    ) from exc

# Action repeat per domain from PlaNet (Hafner et al. 2019), used by SAC+AE, CURL, DrQ and our reference runs.
PLANET_ACTION_REPEAT: dict[str, int] = {
    "cartpole": 8,
    "reacher": 4,
    "cheetah": 4,
    "finger": 2,
    "ball_in_cup": 4,
    "walker": 2,
}

# Camera 0 is the conventional pixel-RL view in every domain except quadruped, whose camera 0 ("global") is
# far away; DrQ / DrQ-v2 use camera 2 ("y", a side view tracking the centre of mass) there.
_DEFAULT_CAMERA: dict[str, int] = {"quadruped": 2}

# "domain_task" -> (domain, task) for every suite task. A direct lookup of the joined name is the same as
# resolving the longest matching domain prefix, and cannot mis-split domains that contain underscores
# ("ball_in_cup_catch", "point_mass_easy", "humanoid_CMU_run").
_TASKS: dict[str, tuple[str, str]] = {f"{d}_{t}": (d, t) for d, t in suite.ALL_TASKS}

# Named in the error for an unknown task: the six PlaNet benchmark tasks.
_EXAMPLE_TASKS = (
    "cartpole_swingup",
    "reacher_easy",
    "cheetah_run",
    "finger_spin",
    "ball_in_cup_catch",
    "walker_walk",
)


def split_task(task: str) -> tuple[str, str]:
    """Split a task id such as ``"ball_in_cup_catch"`` into dm_control's ``("ball_in_cup", "catch")``.

    Raises:
        ValueError: if ``task`` is not a dm_control suite task.
    """
    try:
        return _TASKS[task]
    except KeyError:
        examples = ", ".join(_EXAMPLE_TASKS)
        raise ValueError(
            f"unknown DeepMind Control task {task!r}: expected '<domain>_<task>', e.g. {examples}"
        ) from None


def default_action_repeat(task: str) -> int:
    """The PlaNet action repeat for ``task``'s domain, or 1 for domains PlaNet did not use."""
    return PLANET_ACTION_REPEAT.get(split_task(task)[0], 1)


def default_camera(task: str) -> int:
    """The camera id pixel-RL work renders ``task`` from: 0, except 2 for quadruped."""
    return _DEFAULT_CAMERA.get(split_task(task)[0], 0)


def rescale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an agent action in [-1, 1]^n linearly onto the box [low, high] (clipping to [-1, 1] first).

    The agent's tanh-squashed policy always speaks [-1, 1]; tasks such as quadruped have other control ranges.
    """
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)


def project_points(
    physics: engine.Physics, points: np.ndarray, height: int, width: int, camera_id: int
) -> np.ndarray:
    """Project world points [N, 3] to float32 pixel coordinates [N, 2] in a ``height`` x ``width`` render.

    Uses the camera's current pose in ``physics.data`` (the same pose ``physics.render`` draws with) and the
    module's convention: x right, y down, origin at the top-left pixel's corner. Points behind the camera
    give meaningless coordinates; points outside the view give coordinates outside [0, width) x [0, height).
    """
    return _project(engine.Camera(physics, height, width, camera_id).matrix, points)


def _project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x4 dm_control camera matrix to world points [N, 3] and shift to pixel-corner coordinates."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    uvw = homogeneous @ matrix.T
    # dm_control's image matrix puts the principal point at ((W - 1) / 2, (H - 1) / 2), i.e. integer
    # coordinates at pixel centres; +0.5 moves the origin to the top-left corner (pixel i covers [i, i + 1)).
    return (uvw[:, :2] / uvw[:, 2:3] + 0.5).astype(np.float32)


def landmark_names(physics: engine.Physics, domain: str) -> list[str]:
    """Names of the ground-truth landmarks of ``domain`` (see `landmark_points` for what they are)."""
    if domain == "cartpole":
        return ["cart"] + [_pole_tip_name(i) for i in range(1, len(_pole_geoms(physics)) + 1)]
    return [physics.model.id2name(b, "body") or f"body_{b}" for b in range(1, physics.model.nbody)]


def landmark_points(physics: engine.Physics, domain: str) -> np.ndarray:
    """World positions [L, 3] of the landmarks named by `landmark_names`, from the current ``physics.data``.

    cartpole: the cart body's centre, then the far end of each pole's axis (``pole_tip``, ``pole_2_tip``, ...),
    i.e. the centre of the capsule's end cap, *without* the cap radius (0.045 m): a point on the axis stays
    inside the rendered pole at every angle, so the pixel under the landmark is always pole-coloured, whereas
    the cap's outer end lies on the silhouette edge where anti-aliasing mixes pole and background.
    Every other domain: the centre (``xpos``) of every body except the world body.
    """
    data = physics.data
    if domain == "cartpole":
        cart = physics.model.name2id("cart", "body")
        points = [data.xpos[cart]]
        for g in _pole_geoms(physics):
            # A capsule's local z axis runs along its segment and geom_size[1] is the segment's half-length,
            # but MuJoCo compiles cartpole's fromto="0 0 0 0 0 1" with z pointing *towards the hinge*, so the
            # sign of z says nothing about which end is free: take the end farther from the body's origin
            # (the hinge the pole swings about).
            axis = data.geom_xmat[g].reshape(3, 3)[:, 2]
            outward = data.geom_xpos[g] - data.xpos[physics.model.geom_bodyid[g]]
            sign = 1.0 if float(axis @ outward) >= 0.0 else -1.0
            points.append(data.geom_xpos[g] + sign * physics.model.geom_size[g, 1] * axis)
        return np.stack(points)
    return np.array(data.xpos[1:], dtype=np.float64)


def _pole_geoms(physics: engine.Physics) -> list[int]:
    """Geom ids of the cartpole poles in chain order (dm_control names them pole_1, pole_2, ...)."""
    names = {physics.model.id2name(g, "geom"): g for g in range(physics.model.ngeom)}
    geoms = []
    while (name := f"pole_{len(geoms) + 1}") in names:
        geoms.append(names[name])
    return geoms


def _pole_tip_name(index: int) -> str:
    """Landmark name of the tip of pole ``index`` (1-based): pole_tip, pole_2_tip, pole_3_tip, ..."""
    return "pole_tip" if index == 1 else f"pole_{index}_tip"


class Step(NamedTuple):
    """What `DMCEnv.reset` and `DMCEnv.step` return: one agent step, after action repeat."""

    obs: np.ndarray
    """uint8 [3 * frame_stack, H, W]: the last frame_stack frames, oldest first, channels-first (agent input)."""
    frame: np.ndarray
    """uint8 [3, H, W]: the newest frame alone (what the replay stores; equals ``obs[-3:]``)."""
    reward: float
    """Sum of the rewards over the action_repeat control steps (0.0 on reset)."""
    discount: float
    """0.0 only when the episode terminated (dm_control discount 0); 1.0 otherwise, incl. time-limit ends."""
    first: bool
    """True on the step returned by reset()."""
    last: bool
    """The episode is over (time limit or termination); call reset() next."""
    truncated: bool
    """Last because of the time limit: the value target bootstraps through it."""
    terminated: bool
    """Last with discount 0: no bootstrapping."""
    landmarks: np.ndarray
    """float32 [L, 2] ground-truth (x, y) pixel coordinates in `frame` (module convention); may lie outside."""


def checked_action(action: np.ndarray, action_dim: int) -> np.ndarray:
    """``action`` as float64, or a ValueError naming the expected size."""
    action = np.asarray(action, dtype=np.float64)
    if action.size != action_dim:
        raise ValueError(f"expected an action with {action_dim} elements, got shape {action.shape}")
    return action


def stacked_step(
    frames: deque[np.ndarray], frame: np.ndarray, reward: float, first: bool, last: bool, terminated: bool,
    landmarks: np.ndarray,
) -> Step:  # fmt: skip
    """A Step from the frame stack (the new ``frame`` already pushed) and the episode flags: discount 0 only on a
    termination; a last step that did not terminate is a truncation (it bootstraps)."""
    return Step(
        obs=np.concatenate(frames, axis=0),
        frame=frame,
        reward=reward,
        discount=0.0 if terminated else 1.0,
        first=first,
        last=last,
        truncated=last and not terminated,
        terminated=terminated,
        landmarks=landmarks,
    )


class DMCEnv:
    """A dm_control suite task seen through a camera, with action repeat and frame stacking.

    Args:
        task: suite task id, ``"<domain>_<task>"``, e.g. ``"cartpole_swingup"``.
        image_size: side of the square rendered frames, in pixels.
        action_repeat: control steps per agent step; None takes the PlaNet value for the domain.
        frame_stack: how many consecutive frames make one observation.
        camera_id: which model camera renders the frames; None takes `default_camera`.
        seed: seeds the task's RandomState, so equal seeds give identical episodes and frames.
        time_limit: episode length in simulated seconds; None keeps the task's own (cartpole: 10 s = 1000 steps).
            Short episodes make fast smoke tests; benchmarks keep the default.
    """

    def __init__(
        self,
        task: str,
        image_size: int = 84,
        action_repeat: int | None = None,
        frame_stack: int = 3,
        camera_id: int | None = None,
        seed: int = 0,
        time_limit: float | None = None,
    ) -> None:
        domain, task_name = split_task(task)
        self.task: str = task
        self.image_size: int = image_size
        self.action_repeat: int = default_action_repeat(task) if action_repeat is None else action_repeat
        self.frame_stack: int = frame_stack
        self.camera_id: int = default_camera(task) if camera_id is None else camera_id
        if self.action_repeat < 1 or self.frame_stack < 1 or self.image_size < 1:
            raise ValueError("image_size, action_repeat and frame_stack must be positive")
        self._domain = domain
        self._env = suite.load(
            domain,
            task_name,
            task_kwargs={"random": seed, **({"time_limit": time_limit} if time_limit is not None else {})},
            environment_kwargs={"flat_observation": False},
        )
        physics = self._env.physics
        spec = self._env.action_spec()
        self._action_low = np.asarray(spec.minimum, dtype=np.float64)
        self._action_high = np.asarray(spec.maximum, dtype=np.float64)
        self._action_shape: tuple[int, ...] = tuple(spec.shape)
        # The camera matrix is read from physics.data on every access, so one Camera serves the whole run.
        self._camera = engine.Camera(physics, image_size, image_size, self.camera_id)
        self.landmark_names: list[str] = landmark_names(physics, domain)
        self.obs_shape: tuple[int, int, int] = (3 * frame_stack, image_size, image_size)
        self.frame_shape: tuple[int, int, int] = (3, image_size, image_size)
        # dm_control keeps the episode length (in control steps) only in a private attribute; it is inf for
        # tasks without a time limit (lqr), which we report as sys.maxsize so the type stays int.
        step_limit = float(getattr(self._env, "_step_limit"))  # noqa: B009 (private: no public accessor)
        self.max_episode_steps: int = (
            math.ceil(step_limit / self.action_repeat) if math.isfinite(step_limit) else sys.maxsize
        )
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)
        self._needs_reset = True
        self._closed = False

    @property
    def action_dim(self) -> int:
        """Number of action dimensions; actions live in [-1, 1]^action_dim."""
        return int(np.prod(self._action_shape))

    @property
    def physics(self) -> engine.Physics:
        """The underlying MuJoCo physics (for diagnostics, landmark checks and tests; stepping it bypasses us)."""
        return self._env.physics

    @property
    def unwrapped(self) -> control.Environment:
        """The wrapped dm_control environment (its task and physics), for diagnostics and tests."""
        return self._env

    def reset(self, place: Callable[[engine.Physics], None] | None = None) -> Step:
        """Start a new episode; the frame stack is filled with copies of its first frame.

        ``place``, if given, runs after the task's own reset and may set the state the episode starts from
        (``physics.data.qpos`` / ``qvel``, then ``physics.forward()``), e.g. `kprl.data.start_states.any_state`."""
        self._env.reset()
        if place is not None:
            place(self._env.physics)
        self._needs_reset = False
        frame = self._render_frame()
        self._frames.clear()
        self._frames.extend([frame] * self.frame_stack)
        return self._make_step(frame, 0.0, first=True, last=False, terminated=False)

    def step(self, action: np.ndarray) -> Step:
        """Apply ``action`` (in [-1, 1]^action_dim, clipped, rescaled to the task's bounds) action_repeat times.

        Stops repeating early if the episode ends. Raises RuntimeError when the previous step was the last one
        (or reset() was never called), and ValueError for an action of the wrong size.
        """
        if self._needs_reset:
            raise RuntimeError("DMCEnv.step() called before reset() or after the episode ended; call reset()")
        action = checked_action(action, self.action_dim)
        control = rescale_action(action.reshape(self._action_shape), self._action_low, self._action_high)
        reward = 0.0
        for _ in range(self.action_repeat):
            ts = self._env.step(control)
            reward += float(ts.reward or 0.0)
            if ts.last():
                break
        last = bool(ts.last())
        # dm_control reports a time-limit end with discount 1.0 and a task termination with discount 0.0.
        terminated = last and float(ts.discount) == 0.0
        self._needs_reset = last
        frame = self._render_frame()
        self._frames.append(frame)
        return self._make_step(frame, reward, first=False, last=last, terminated=terminated)

    def render(self, size: int) -> np.ndarray:
        """uint8 [size, size, 3] (HWC) image of the current state from the env's camera, e.g. for videos."""
        return self._env.physics.render(size, size, camera_id=self.camera_id)

    def seed_episode(self, seed: int) -> None:
        """Make the next reset() start the episode that ``seed`` determines (initial pose, task randomness)."""
        self._env.task.random.seed(seed)

    def landmarks(self, size: int) -> np.ndarray:
        """float32 [L, 2] landmark pixel coordinates of the current state in a ``size`` x ``size`` render."""
        points = landmark_points(self._env.physics, self._domain)
        return project_points(self._env.physics, points, size, size, self.camera_id)

    def random_state(self) -> dict[str, np.ndarray]:
        """The task's numpy RandomState as plain arrays (npz-safe), to resume exactly at an episode boundary.

        The physics is fully reset at every reset(), so this state alone determines the next episode.
        """
        # legacy=True gives the MT19937 tuple ('MT19937', keys, pos, has_gauss, cached_gaussian).
        _, keys, pos, has_gauss, cached_gaussian = self._env.task.random.get_state(legacy=True)
        return {
            "keys": np.array(keys, dtype=np.uint32),
            "pos": np.array(pos, dtype=np.int64),
            "has_gauss": np.array(has_gauss, dtype=np.int64),
            "cached_gaussian": np.array(cached_gaussian, dtype=np.float64),
        }

    def set_random_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state from `random_state`; the next reset() then starts the same episode as it would have."""
        self._env.task.random.set_state(
            (
                "MT19937",
                np.asarray(state["keys"], dtype=np.uint32),
                int(state["pos"]),
                int(state["has_gauss"]),
                float(state["cached_gaussian"]),
            )
        )

    def close(self) -> None:
        """Release the renderer's GL context and MuJoCo buffers; the env cannot be used afterwards.

        Safe to call more than once.
        """
        if self._closed:
            return
        self._closed = True
        self._env.close()
        # Drop our Camera (it holds an MjvScene tied to this model) before freeing the physics it reads from.
        del self._camera
        self._env.physics.free()

    def _render_frame(self) -> np.ndarray:
        """Render the current state as a uint8 [3, H, W] frame."""
        image = self._env.physics.render(self.image_size, self.image_size, camera_id=self.camera_id)
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _make_step(self, frame: np.ndarray, reward: float, first: bool, last: bool, terminated: bool) -> Step:
        """Assemble a Step from the new frame (already pushed on the stack) and the episode flags."""
        points = landmark_points(self._env.physics, self._domain)
        landmarks = _project(self._camera.matrix, points)
        return stacked_step(self._frames, frame, reward, first, last, terminated, landmarks)
