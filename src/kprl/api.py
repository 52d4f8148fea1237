"""The Python API: what a notebook or a script calls instead of the command line.

Everything here is a thin, typed door onto the same code the CLI runs (docs/python-api.md)::

    import kprl

    cfg = kprl.make_config(agent="sac_imm", task="cartpole_swingup", run_dir="runs/nb", env_steps=20_000,
                           augmentation="crop", imm_lr=2e-4)
    summary = kprl.train_agent(cfg)                      # resumable: the same call again continues the run
    print(kprl.evaluate_agent("runs/nb", episodes=5))    # mean return of the saved agent
    policy = kprl.load_policy("runs/nb")           # act in its environment
    env = policy.make_gym_env()                    # a gymnasium.Env (or policy.make_env(seed) for kprl's own)
    obs, info = env.reset(seed=0)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))   # or a batch [N, C, H, W] -> [N, A]
        done = terminated or truncated
    detector = kprl.load_keypoint_detector("runs/nb")   # or a `kprl imm train` run
    points = detector.detect(frames)               # uint8 [N, H, W, 3] -> float32 [N, K, 2] pixel (x, y)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kprl import config as C
from kprl.envs.factory import PixelEnv, check_task, make_env
from kprl.errors import ConfigError
from kprl.imm.checkpoint import load_imm
from kprl.imm.detect import detect, detect_agent, is_agent_checkpoint
from kprl.rl.evaluate import evaluate_saved, load_agent
from kprl.rl.sac import SACAgent
from kprl.rl.train import EvalCallback
from kprl.rl.train import train as _train
from kprl.runtime.hardware import resolve_device
from kprl.viz.keypoints import newest_frame_keypoints, view_to_frame

if TYPE_CHECKING:
    from kprl.envs.gymnasium_env import PixelGymEnv

TrainConfig = C.TrainConfig


def make_config(
    agent: str = "sac_ae", task: str = "cartpole_swingup", run_dir: str | Path = "runs/default", **options: Any
) -> C.TrainConfig:
    """A validated training configuration: the defaults of ``kprl train`` with ``agent``, ``task``, ``run_dir``
    and any other option set by name, spelled as a field (``imm_lr``), dotted (``keypoint.imm_lr``) or as its flag
    without dashes. A :class:`kprl.errors.ConfigError` names a bad option, value or task (checked as ``kprl train``
    checks them, before anything runs)."""
    cfg = C.with_options(C.TrainConfig(), {"agent": agent, "env.task": task, "run_dir": run_dir, **options})
    C.validate(cfg)
    check_task(cfg.env.task)
    return cfg


def train_agent(cfg: C.TrainConfig, quiet: bool = True, on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes, as ``kprl train`` does; returns its summary (run_dir, env_steps,
    final_eval_return, wall_hours, stopped_by_callback). ``on_eval`` receives every evaluation row as it is logged
    (env_step, episode_return, ...); if it returns ``False``, training stops there, cleanly: a checkpoint is written
    at that env step, the summary has ``stopped_by_callback`` True, and calling ``train_agent`` again resumes from
    it (early stopping). Any other return value (None, True) continues. ``quiet=False`` prints the progress
    lines."""
    return _train(cfg, quiet=quiet, on_eval=on_eval)


def evaluate_agent(
    run: str | Path, episodes: int = 10, video: str | Path | None = None, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """Evaluate the newest checkpoint of a run directory (or a checkpoint directory) as ``kprl eval`` does: the
    deterministic policy for ``episodes`` episodes; optionally the first one as an mp4 ``video``. Returns
    episode_return (mean) with its std/min/max, env_step and the checkpoint used."""
    # load_agent finds the newest checkpoint below a run dir, and the run dir above a checkpoint.
    return evaluate_saved(
        checkpoint=Path(run),
        episodes=episodes,
        video=Path(video) if video is not None else None,
        device=device,
        seed=seed,
    )


@dataclass
class Policy:
    """A trained agent, ready to act on observations of its environment."""

    agent: SACAgent
    config: C.TrainConfig
    env_step: int
    """Env steps the agent had trained for at its checkpoint."""

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """(3 * frame_stack, S, S): one observation as the agent's environment gives it (S: the render size, the
        image size plus 16 with crop augmentation)."""
        size = C.render_size(self.config)
        return (3 * self.config.env.frame_stack, size, size)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions in [-1, 1]^A: float32 [A] for one observation uint8 [3 * frame_stack, S, S] as its environment
        gives it (`obs_shape`), float32 [N, A] for a batch [N, 3 * frame_stack, S, S] (e.g. from a vector env).
        ``deterministic`` (the default) takes the policy's mean, as evaluation does; False samples, as training
        does. A ValueError names the expected shapes for any other shape."""
        obs = np.asarray(obs)
        expected = self.obs_shape
        if obs.shape == expected:
            return self.agent.act(obs, deterministic=deterministic)
        if obs.ndim == len(expected) + 1 and obs.shape[1:] == expected:
            agent = self.agent
            with torch.no_grad():
                x = agent.augmentation.for_acting(torch.as_tensor(obs, device=agent.device))
                with agent.autocast():
                    mu, pi, _ = agent.actor(x, deterministic=deterministic)
            return (mu if deterministic else pi).float().cpu().numpy()
        batch = "(N, " + ", ".join(map(str, expected)) + ")"
        raise ValueError(f"Policy.act expects one observation of shape {expected} or a batch of shape {batch}, "
                         f"got shape {obs.shape}")  # fmt: skip

    def keypoints(self, obs: np.ndarray) -> np.ndarray | None:
        """float32 [K, 2] pixel (x, y) of the agent's keypoints in the newest frame of ``obs`` (x right, y down,
        in the observation's own pixels), or None for an agent without keypoints (sac_ae)."""
        coords = self.agent.keypoints(torch.as_tensor(np.asarray(obs)).unsqueeze(0))
        if coords is None:
            return None
        size = int(np.asarray(obs).shape[-1])
        view = self.agent.augmentation.out_size
        return view_to_frame(newest_frame_keypoints(self.agent, coords)[0], view, C.render_size(self.config),
                             size, size)  # fmt: skip

    def make_env(self, seed: int = 0) -> PixelEnv:
        """A fresh environment exactly as the agent saw during training (task, render size, action repeat, frame
        stack, camera, time limit); close it when done."""
        return make_env(self.config, seed=seed)

    def make_gym_env(self, render_mode: str | None = None, render_size: int | None = None) -> PixelGymEnv:
        """The same environment as `make_env`, as a ``gymnasium.Env`` (`kprl.envs.gymnasium_env.PixelGymEnv`):
        seed it with ``reset(seed=...)``; close it when done. Needs Gymnasium (``pip install 'kprl[gym]'``)."""
        # Gymnasium is optional (kprl[gym]): imported only when a Gymnasium env is asked for.
        from kprl.envs.gymnasium_env import PixelGymEnv

        env = self.config.env
        return PixelGymEnv(env.task, image_size=C.render_size(self.config), action_repeat=env.action_repeat,
                           frame_stack=env.frame_stack, camera_id=env.camera_id, time_limit=env.time_limit,
                           render_mode=render_mode, render_size=render_size)  # fmt: skip


def load_policy(run: str | Path, device: str = "cpu") -> Policy:
    """The agent of a ``kprl train`` run directory (its newest checkpoint) or of one checkpoint directory."""
    agent, cfg, meta = load_agent(checkpoint=Path(run), device=device)
    agent.train(False)  # evaluation mode for every act() and keypoints() call
    return Policy(agent, cfg, int(meta["env_step"]))


def make_gym_env(
    task: str = "cartpole_swingup",
    image_size: int = 84,
    action_repeat: int | None = None,
    frame_stack: int = 3,
    camera_id: int | None = None,
    time_limit: float | None = None,
    render_mode: str | None = None,
    render_size: int | None = None,
) -> PixelGymEnv:
    """kprl's pixel environment of ``task`` (a dm_control task or ``gym:ID``) as a ``gymnasium.Env``: uint8
    observations [3 * frame_stack, image_size, image_size], actions in [-1, 1]^A, time limits as truncations. The
    arguments are those of `kprl.envs.gymnasium_env.PixelGymEnv`; None takes kprl's default for the task. A
    :class:`kprl.errors.ConfigError` for an unknown task. Needs Gymnasium (``pip install 'kprl[gym]'``)."""
    # Gymnasium is optional (kprl[gym]): imported only when a Gymnasium env is asked for.
    from kprl.envs.gymnasium_env import PixelGymEnv

    return PixelGymEnv(task, image_size=image_size, action_repeat=action_repeat, frame_stack=frame_stack,
                       camera_id=camera_id, time_limit=time_limit, render_mode=render_mode,
                       render_size=render_size)  # fmt: skip


@dataclass
class KeypointDetector:
    """Keypoints of a trained model on arbitrary frames: a ``kprl imm train`` model, or a keypoint agent."""

    source: Path
    keypoints: int
    """K, keypoints per frame."""
    _detect: Callable[[np.ndarray], np.ndarray]

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """float32 [N, K, 2] pixel (x, y) (x right, y down) in the frames' own coordinates for uint8 [N, H, W, 3]
        frames, resized to the model's input as ``kprl keypoints`` does. For an agent the frames are taken as
        consecutive frames of one episode (the agent sees stacks of them)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ConfigError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        return self._detect(frames)


def load_keypoint_detector(path: str | Path, device: str = "cpu") -> KeypointDetector:
    """A :class:`KeypointDetector` from a ``kprl imm train`` run (run dir, checkpoint dir or state.pt) or a keypoint
    agent's run (sac_ae_imm, sac_imm). A :class:`kprl.errors.ConfigError` for an agent without keypoints."""
    path = Path(path)
    if is_agent_checkpoint(path):
        policy = load_policy(path, device)
        if policy.agent.keypoint_head_index is None:
            raise ConfigError(f"{path} holds a {policy.config.agent} agent, which has no keypoints")
        # detect_agent returns the newest frame's keypoints: K of them, per-frame keypoints or not.
        return KeypointDetector(path, policy.config.keypoint.keypoints,
                                lambda frames: detect_agent(policy.agent, policy.config, frames))  # fmt: skip

    dev = resolve_device(device)
    loaded = load_imm(path, dev)
    return KeypointDetector(path, loaded.model.cfg.keypoints,
                            lambda frames: detect(loaded.model, loaded.image_size, frames, dev))  # fmt: skip
