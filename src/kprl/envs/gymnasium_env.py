"""kprl's pixel environments as a standard ``gymnasium.Env``, for Gymnasium, Stable-Baselines3 and similar code.

`PixelGymEnv` wraps the environment the training loop uses (`kprl.envs.factory.make_pixel_env`: a dm_control task
by name, or ``gym:ID``), so what it returns is what a kprl agent sees:

* observations: uint8 ``[3 * frame_stack, image_size, image_size]``, channels first, oldest frame first;
* actions: ``Box(-1, 1, (A,), float32)``, rescaled onto the task's own bounds (values outside are clipped);
* rewards: summed over ``action_repeat`` control steps;
* ``terminated`` for a true termination (discount 0); ``truncated`` for the time limit, so value targets bootstrap
  through it; ``info`` holds ``discount`` and the ground-truth ``landmarks`` ([L, 2] pixel (x, y); empty for
  ``gym:ID`` tasks).

``reset(seed=s)`` makes the episode a function of ``s``; later unseeded resets continue from it, and the first reset
without a seed draws one. With ``render_mode="rgb_array"``, ``render()`` returns the newest frame as uint8
``[H, W, 3]`` (or a ``render_size`` render of the current state).

Importing this module registers the id ``kprl/Pixel-v0``, so ``gymnasium.make("kprl.envs.gymnasium_env:kprl/Pixel-v0",
task="cartpole_swingup")`` works without importing it first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kprl.envs.dmc import DMCEnv
from kprl.envs.factory import PixelEnv, check_task, make_pixel_env
from kprl.errors import KprlError

try:
    import gymnasium
    from gymnasium import spaces
except ImportError as exc:
    raise KprlError("kprl's Gymnasium environments need Gymnasium: pip install 'kprl[gym]'") from exc

ENV_ID = "kprl/Pixel-v0"
"""The Gymnasium id of `PixelGymEnv` (its keyword arguments are those of `PixelGymEnv`)."""

if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=f"{__name__}:PixelGymEnv", nondeterministic=False)


def _agent_steps_per_second(env: PixelEnv) -> float:
    """Agent steps (after action repeat) per simulated second: the frame rate of an episode's observations."""
    if isinstance(env, DMCEnv):
        dt = float(env.unwrapped.control_timestep())
    else:
        dt = getattr(env.unwrapped.unwrapped, "dt", None)
        if dt is None:
            fps = env.unwrapped.metadata.get("render_fps") or 30
            return float(fps) / env.action_repeat
    return 1.0 / (float(dt) * env.action_repeat)


class PixelGymEnv(gymnasium.Env):
    """A kprl pixel environment as a ``gymnasium.Env``.

    Args:
        task: a dm_control task (``"cartpole_swingup"``) or ``"gym:ID"``.
        image_size: side of the square frames, in pixels. An agent trained with crop augmentation sees frames 16 px
            larger than its ``image_size`` option; `kprl.api.Policy.make_gym_env` gets this right by itself.
        action_repeat: control steps per action; None takes kprl's default for the task (PlaNet's for dm_control).
        frame_stack: frames per observation.
        camera_id: the camera that renders the frames; None takes kprl's default.
        time_limit: episode length in simulated seconds; None keeps the task's own.
        render_mode: None, or ``"rgb_array"`` for `render`.
        render_size: None: `render` returns the newest observed frame; an int: a fresh render of that size.

    Raises:
        kprl.errors.ConfigError: an unknown task, or one kprl cannot observe from pixels.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        task: str = "cartpole_swingup",
        image_size: int = 84,
        action_repeat: int | None = None,
        frame_stack: int = 3,
        camera_id: int | None = None,
        time_limit: float | None = None,
        render_mode: str | None = None,
        render_size: int | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if render_size is not None and render_size < 1:
            raise ValueError(f"render_size must be >= 1, got {render_size}")
        check_task(task)
        # The construction seed does not matter: every episode is seeded from np_random at reset.
        self._env: PixelEnv = make_pixel_env(task, image_size=image_size, action_repeat=action_repeat,
                                             frame_stack=frame_stack, camera_id=camera_id, seed=0,
                                             time_limit=time_limit)  # fmt: skip
        self.render_mode = render_mode
        self.render_size = render_size
        self.observation_space = spaces.Box(0, 255, self._env.obs_shape, dtype=np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (self._env.action_dim,), dtype=np.float32)
        self.metadata = {**self.metadata, "render_fps": _agent_steps_per_second(self._env)}
        # A spec with these arguments: gymnasium.make(env.spec) (and check_env) can make a copy of this env.
        kwargs = {"task": task, "image_size": image_size, "action_repeat": action_repeat, "frame_stack": frame_stack,
                  "camera_id": camera_id, "time_limit": time_limit, "render_mode": render_mode,
                  "render_size": render_size}  # fmt: skip
        self.spec = dataclasses.replace(gymnasium.spec(ENV_ID), kwargs=kwargs)
        self._frame: np.ndarray | None = None
        self._episode_seeded = False

    @property
    def pixel_env(self) -> PixelEnv:
        """The wrapped kprl environment (`DMCEnv` or `GymEnv`): its physics, landmarks, action repeat, ..."""
        return self._env

    @property
    def max_episode_steps(self) -> int:
        """Steps (actions) in an episode that only the time limit ends."""
        return self._env.max_episode_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the first observation, and ``info`` (``discount``, ``landmarks``)."""
        super().reset(seed=seed)
        if seed is not None or not self._episode_seeded:
            # The episode follows np_random: equal seeds give equal episodes, and unseeded resets continue.
            self._env.seed_episode(int(self.np_random.integers(2**31 - 1)))
            self._episode_seeded = True
        step = self._env.reset()
        self._frame = step.frame
        return step.obs, self._info(step)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One agent step (``action_repeat`` control steps): obs, reward, terminated, truncated, info. After the
        episode ends, call `reset` (stepping on raises RuntimeError)."""
        step = self._env.step(np.asarray(action, dtype=np.float64))
        self._frame = step.frame
        return step.obs, float(step.reward), bool(step.terminated), bool(step.truncated), self._info(step)

    def render(self) -> np.ndarray | None:
        """uint8 [H, W, 3] with ``render_mode="rgb_array"`` (None without a render mode)."""
        if self.render_mode is None:
            return None
        if self.render_size is None and self._frame is not None:
            return np.ascontiguousarray(self._frame.transpose(1, 2, 0))
        return np.asarray(self._env.render(self.render_size or self._env.image_size))

    def close(self) -> None:
        """Release the renderer and the simulation; safe to call more than once."""
        self._env.close()
        super().close()

    @staticmethod
    def _info(step: Any) -> dict[str, Any]:
        return {"discount": float(step.discount), "landmarks": np.array(step.landmarks, copy=True)}
