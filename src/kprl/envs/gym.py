"""Any Gymnasium environment that renders ``rgb_array``, seen from pixels like `DMCEnv` (``--task gym:ID``).

`GymEnv` has the interface of `kprl.envs.dmc.DMCEnv` (reset/step returning `Step`, render, random_state, close,
obs/frame shapes, action_dim, max_episode_steps), so the training loop, replay, agents, evaluation and videos work
unchanged. What differs:

* Frames come from ``env.render()``. MuJoCo environments are asked to render at ``image_size`` directly (their
  ``width``/``height``/``camera_id`` arguments); others are centre-cropped to a square and resized by area.
* Actions: the agent's [-1, 1]^n is mapped onto the ``Box`` action space's bounds. Other action spaces are refused.
* Episode ends: Gymnasium's ``terminated`` gives discount 0 (no bootstrapping); ``truncated`` (the TimeLimit) is a
  time-limit end that bootstraps, as in dm_control.
* There are no ground-truth landmarks: ``Step.landmarks`` is empty [0, 2] and ``landmark_names`` is ``[]``, so
  keypoint quality against landmarks is reported as unavailable.
* ``dm_control/...`` ids work through shimmy (``pip install shimmy[dm-control]``); prefer plain ``--task
  cartpole_swingup`` for DMC, which keeps landmarks and the PlaNet action repeat.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kprl.envs.dmc import Step, checked_action, rescale_action, stacked_step
from kprl.errors import ConfigError, KprlError, first_line

PREFIX = "gym:"
NO_LANDMARKS = np.zeros((0, 2), dtype=np.float32)


def is_gym_task(task: str) -> bool:
    """True for ``gym:ID`` task names."""
    return task.startswith(PREFIX)


def gym_id(task: str) -> str:
    """The Gymnasium id of a ``gym:ID`` task name."""
    return task[len(PREFIX) :]


def _import_gymnasium() -> Any:
    try:  # Gymnasium is optional (kprl[gym]): imported when a gym:ID task is used
        import gymnasium
    except ImportError as exc:
        raise KprlError("--task gym:ID needs Gymnasium: pip install 'kprl[gym]' (MuJoCo tasks included)") from exc
    return gymnasium


def check_gym_task(task: str) -> None:
    """A one-line :class:`ConfigError` when ``gym:ID`` names no registered Gymnasium environment."""
    gymnasium = _import_gymnasium()
    env_id = gym_id(task)
    if not env_id:
        raise ConfigError("--task gym:ID needs an environment id after 'gym:', e.g. gym:InvertedPendulum-v5")
    if env_id not in gymnasium.registry:
        # A namespaced id ("dm_control/...") is registered when its package is imported: let make() try it.
        if "/" not in env_id:
            raise ConfigError(f"unknown Gymnasium environment {env_id!r} (see gymnasium.pprint_registry())")


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size, size, 3]: centre crop to a square, then area resize (exact when equal)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(image)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    mode = "area" if side > size else "bilinear"
    y = F.interpolate(x, size=(size, size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class GymEnv:
    """A Gymnasium environment with action repeat and frame stacking, observed through ``render()``.

    Args mirror `DMCEnv`: ``task`` is ``gym:ID``; ``action_repeat`` None means 1 (Gymnasium ids have no
    PlaNet value); ``camera_id`` is passed to MuJoCo environments; ``seed`` seeds the environment's generator, which
    every reset continues and `random_state` saves; ``time_limit`` in simulated seconds
    needs an environment with ``dt`` (MuJoCo) and ends episodes after it (or at the environment's own limit, if
    that comes first).
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
        gymnasium = _import_gymnasium()
        check_gym_task(task)
        self.task = task
        self.image_size = image_size
        self.action_repeat = 1 if action_repeat is None else action_repeat
        self.frame_stack = frame_stack
        self.camera_id = camera_id
        if self.action_repeat < 1 or self.frame_stack < 1 or self.image_size < 1:
            raise ValueError("image_size, action_repeat and frame_stack must be positive")
        self._env = self._make(gymnasium, gym_id(task), image_size, camera_id)
        space = self._env.action_space
        if not isinstance(space, gymnasium.spaces.Box):
            self._env.close()
            raise ConfigError(f"{task} has a {type(space).__name__} action space; kprl's agents need a Box (continuous)")
        self._action_low = np.asarray(space.low, dtype=np.float64)
        self._action_high = np.asarray(space.high, dtype=np.float64)
        if not (np.isfinite(self._action_low).all() and np.isfinite(self._action_high).all()):
            self._env.close()
            raise ConfigError(f"{task} has an unbounded action space; kprl needs finite bounds to rescale [-1, 1]")
        self._action_shape: tuple[int, ...] = tuple(space.shape)
        limit = self._env.spec.max_episode_steps if self._env.spec is not None else None
        if time_limit is not None:
            dt = getattr(self._env.unwrapped, "dt", None)
            if dt is None:
                self._env.close()
                raise ConfigError(f"--time-limit needs an environment with a time step (dt); {task} has none")
            limit = max(1, round(time_limit / dt))
        self._step_limit = limit
        self.max_episode_steps = math.ceil(limit / self.action_repeat) if limit else sys.maxsize
        self.landmark_names: list[str] = []
        self.obs_shape = (3 * frame_stack, image_size, image_size)
        self.frame_shape = (3, image_size, image_size)
        self._frames: deque[np.ndarray] = deque(maxlen=frame_stack)
        self._needs_reset = True
        self._steps = 0
        self._closed = False
        # Seed the generator, and render once: some renderers fix camera state at their first render (MuJoCo's
        # free camera looks at where the model was), so it must come from the seed, not from a resumed state.
        try:
            self._env.reset(seed=seed)
            if self._env.render() is None:
                raise ConfigError(f"{task} rendered nothing; kprl needs an environment that renders rgb_array")
        except gymnasium.error.Error as exc:  # e.g. DependencyNotInstalled (pygame, box2d)
            self._env.close()
            raise ConfigError(f"cannot render {task}: {first_line(exc)}") from exc

    @staticmethod
    def _make(gymnasium: Any, env_id: str, size: int, camera_id: int | None) -> Any:
        """``gymnasium.make`` asking MuJoCo environments for ``size`` px frames; other ones as they come."""
        sized = {"width": size, "height": size, **({"camera_id": camera_id} if camera_id is not None else {})}
        try:
            return gymnasium.make(env_id, render_mode="rgb_array", **sized)
        except TypeError:
            if camera_id is not None:
                raise ConfigError(f"--camera-id is not supported by gym:{env_id}") from None
            try:
                return gymnasium.make(env_id, render_mode="rgb_array")
            except Exception as exc:  # gymnasium raises many types for missing extras (box2d, atari, ...)
                raise ConfigError(f"cannot make gym:{env_id}: {first_line(exc)}") from exc
        except gymnasium.error.Error as exc:
            raise ConfigError(f"cannot make gym:{env_id}: {first_line(exc)}") from exc

    @property
    def action_dim(self) -> int:
        """Number of action dimensions; actions live in [-1, 1]^action_dim."""
        return int(np.prod(self._action_shape))

    @property
    def unwrapped(self) -> Any:
        """The Gymnasium environment (its ``unwrapped`` for the raw one)."""
        return self._env

    def reset(self) -> Step:
        """Start a new episode; the frame stack is filled with copies of its first frame."""
        self._env.reset()
        self._needs_reset = False
        self._steps = 0
        frame = self._render_frame()
        self._frames.clear()
        self._frames.extend([frame] * self.frame_stack)
        return self._make_step(frame, 0.0, last=False, terminated=False, first=True)

    def step(self, action: np.ndarray) -> Step:
        """Apply ``action`` (in [-1, 1]^action_dim, rescaled to the Box bounds) action_repeat times, stopping early
        when the episode ends."""
        if self._needs_reset:
            raise RuntimeError("GymEnv.step() called before reset() or after the episode ended; call reset()")
        action = checked_action(action, self.action_dim)
        control = rescale_action(action.reshape(self._action_shape), self._action_low, self._action_high)
        control = control.astype(self._env.action_space.dtype)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            _, r, terminated, truncated, _ = self._env.step(control)
            reward += float(r)
            self._steps += 1
            truncated = bool(truncated) or (self._step_limit is not None and self._steps >= self._step_limit)
            if terminated or truncated:
                break
        last = bool(terminated or truncated)
        self._needs_reset = last
        frame = self._render_frame()
        self._frames.append(frame)
        return self._make_step(frame, reward, last=last, terminated=bool(terminated), first=False)

    def render(self, size: int) -> np.ndarray:
        """uint8 [size, size, 3] image of the current state (resized from the environment's own render)."""
        return square_resize(self._render(), size)

    def _render(self) -> np.ndarray:
        # Gymnasium's MuJoCo renderer makes its GL context current only when one env has several viewers; with
        # two envs in a process (training and evaluation) it would draw into the other's context, or into a freed
        # one (black frames) after the evaluation env closed.
        viewer = getattr(getattr(self._env.unwrapped, "mujoco_renderer", None), "viewer", None)
        if viewer is not None and hasattr(viewer, "make_context_current"):
            viewer.make_context_current()
        return np.asarray(self._env.render())

    def seed_episode(self, seed: int) -> None:
        """Make the next reset() start the episode that ``seed`` determines."""
        self._env.unwrapped.np_random = np.random.default_rng(seed)

    def landmarks(self, size: int) -> np.ndarray:
        """No ground truth: an empty [0, 2] array (keypoint quality against landmarks is unavailable)."""
        return NO_LANDMARKS

    def random_state(self) -> dict[str, np.ndarray]:
        """The environment's generator state (PCG64 integers exceed int64: stored as JSON bytes), npz-safe."""
        state = self._env.unwrapped.np_random.bit_generator.state
        return {"json": np.frombuffer(json.dumps(state).encode(), dtype=np.uint8).copy()}

    def set_random_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore `random_state`; the next reset() starts the episode an uninterrupted run would have."""
        self._env.unwrapped.np_random.bit_generator.state = json.loads(bytes(np.asarray(state["json"])).decode())
        self._needs_reset = True

    def close(self) -> None:
        """Release the environment and its renderer; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._env.close()

    def _render_frame(self) -> np.ndarray:
        image = square_resize(self._render(), self.image_size)
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def _make_step(self, frame: np.ndarray, reward: float, last: bool, terminated: bool, first: bool) -> Step:
        return stacked_step(self._frames, frame, reward, first, last, terminated, NO_LANDMARKS)
