"""Evaluation: the deterministic policy for a few episodes on a fresh env (`evaluate`, what training runs at every
``eval_every`` env steps), optionally with a video showing the agent's keypoints and the agent's IMM example figure;
loading a saved agent (`load_agent`) and re-evaluating it (`evaluate_saved`, ``kprl eval``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kprl import config as C
from kprl.envs.factory import make_env
from kprl.errors import CheckpointError, ConfigError, first_line
from kprl.rl.factory import make_agent
from kprl.rl.sac import SACAgent
from kprl.runtime.checkpoint import CHECKPOINT_DIR, find_checkpoint, load_state
from kprl.runtime.hardware import resolve_device
from kprl.runtime.video import write_video
from kprl.viz.imm import write_agent_imm_figure
from kprl.viz.keypoints import draw_points, newest_frame_keypoints, view_to_frame


def load_agent(
    run_dir: Path | None = None, checkpoint: Path | None = None, device: str = "cpu"
) -> tuple[SACAgent, C.TrainConfig, dict[str, Any]]:
    """Build the agent of a run and load its newest checkpoint (or the given one).

    Returns (agent, config, checkpoint metadata with ``env_step``)."""
    if run_dir is None and checkpoint is None:
        raise ConfigError("give --run-dir or --checkpoint")
    if run_dir is not None:
        C.require_rl_run(Path(run_dir), "kprl eval")
    ckpt = find_checkpoint(Path(checkpoint if checkpoint is not None else run_dir))  # type: ignore[arg-type]
    if ckpt is None:
        raise CheckpointError(f"no checkpoint found in {checkpoint or run_dir}")
    if run_dir is None:
        # .../RUN/checkpoints/step_N
        run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else ckpt.parent
    config_file = Path(run_dir) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{config_file} not found: cannot tell which agent the checkpoint holds")
    C.require_rl_run(Path(run_dir), "kprl eval")
    cfg = C.load_json(C.TrainConfig, config_file)
    cfg.device = device
    dev = resolve_device(device)
    state = load_state(ckpt, map_location=dev)
    if state.get("agent_name") != cfg.agent:
        raise CheckpointError(
            f"checkpoint {ckpt} holds agent {state.get('agent_name')!r}, config says {cfg.agent!r}"
        )
    obs_shape = tuple(int(x) for x in state["obs_shape"])
    agent = make_agent(cfg, obs_shape, int(state["action_dim"]), dev)  # type: ignore[arg-type]
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {ckpt} does not fit agent {cfg.agent}: {first_line(exc)}"
        ) from exc
    return agent, cfg, {"env_step": int(state["env_step"]), "checkpoint": str(ckpt)}


def keypoint_video_frame(agent: SACAgent, obs: np.ndarray, frame: np.ndarray, render_size: int) -> np.ndarray:
    """A copy of the video ``frame`` uint8 [S, S, 3] (the env camera's full view at any size S) with the agent's
    keypoints of the observation ``obs`` uint8 [C, render_size, render_size] drawn as discs
    (`kprl.viz.keypoints.draw_points`; colours as `kprl keypoints`).

    The keypoints are found in the centre crop the network sees and mapped to video pixels by
    `kprl.viz.keypoints.view_to_frame`; with per-frame keypoints only the newest frame's are drawn. The frame is returned
    unchanged (not copied) for agents without keypoints."""
    coords = agent.keypoints(torch.as_tensor(obs).unsqueeze(0))
    if coords is None:
        return frame
    coords = newest_frame_keypoints(agent, coords)
    height, width = int(frame.shape[0]), int(frame.shape[1])
    points = view_to_frame(coords[0], agent.augmentation.out_size, render_size, height, width)
    return draw_points(np.array(frame, dtype=np.uint8, copy=True), points)


IMM_FIGURE_EXAMPLES = 4
"""Observation pairs of the first evaluation episode shown in the agent's IMM example figure."""


def imm_pair_indices(
    steps: int, offset: int, examples: int = IMM_FIGURE_EXAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) indices of up to ``examples`` observation pairs ``offset`` steps apart, spread evenly over
    an episode of ``steps + 1`` observations (reset's included); the offset shrinks to ``steps`` for a shorter
    episode. Returns two int arrays of equal length (empty when ``steps`` is 0)."""
    offset = min(max(1, offset), steps)
    if offset < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    source = np.unique(np.round(np.linspace(0, steps - offset, examples)).astype(np.int64))
    return source, source + offset


def evaluate_policy(
    agent: SACAgent,
    cfg: C.TrainConfig,
    eval_seed: int,
    episodes: int,
    video_path: Path | None = None,
    figure_path: Path | None = None,
    on_episode: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Run ``episodes`` episodes with the deterministic policy on a fresh env seeded by ``eval_seed``.

    Training seeds each evaluation from the run seed and the env step (not from a running RNG), so evaluations are
    identical whether or not the run was interrupted and resumed.

    ``video_path``: write the first episode as an mp4 of ``cfg.video_size`` px frames; for agents with keypoints
    each frame shows the keypoints of its observation (`keypoint_video_frame`). ``figure_path``: for agents with
    an IMM objective, write the IMM example figure of ``IMM_FIGURE_EXAMPLES`` observation pairs spread over the
    first episode (`kprl.viz.imm.write_agent_imm_figure`); ignored for other agents. Neither changes the actions:
    keypoints are computed only for the video and the figure, after acting. ``on_episode(index, return)`` is
    called after each episode (progress)."""
    env = make_env(cfg, seed=eval_seed)
    render = C.render_size(cfg)
    draw = video_path is not None and agent.keypoint_head_index is not None
    # agent.target_offset is set exactly when the agent trains an IMM objective (a GenNet to draw the figure with).
    offset = agent.target_offset if figure_path is not None else None
    agent.train(False)
    returns: list[float] = []
    try:
        for episode in range(episodes):
            step = env.reset()
            frames: list[np.ndarray] | None = None
            if video_path is not None and episode == 0:
                frames = [env.render(cfg.video_size)]
                if draw:
                    frames[0] = keypoint_video_frame(agent, step.obs, frames[0], render)
            observations = [step.obs.copy()] if offset is not None and episode == 0 else None
            total = 0.0
            while not step.last:
                step = env.step(agent.act(step.obs, deterministic=True))
                total += step.reward
                if frames is not None:
                    frame = env.render(cfg.video_size)
                    frames.append(keypoint_video_frame(agent, step.obs, frame, render) if draw else frame)
                if observations is not None:
                    observations.append(step.obs.copy())
            returns.append(total)
            if on_episode is not None:
                on_episode(episode, total)
            if frames is not None and video_path is not None:
                write_video(video_path, frames, fps=max(1, 30 // max(1, env.action_repeat // 2)))
            if observations is not None and offset is not None and figure_path is not None:
                _write_imm_figure(agent, observations, offset, figure_path)
    finally:
        env.close()
        agent.train(True)
    return {
        "episode_return": float(np.mean(returns)),
        "episode_return_std": float(np.std(returns)),
        "episode_return_min": float(np.min(returns)),
        "episode_return_max": float(np.max(returns)),
        "episodes": float(len(returns)),
    }


def _write_imm_figure(
    agent: SACAgent, observations: list[np.ndarray], offset: int, path: Path
) -> Path | None:
    """The agent's IMM example figure of pairs of one episode's observations (`imm_pair_indices`); None when the
    episode is too short for a pair."""
    source, target = imm_pair_indices(len(observations) - 1, offset)
    if len(source) == 0:
        return None
    stacked = np.stack(observations)
    return write_agent_imm_figure(agent, stacked[source], stacked[target], path)


def evaluate_saved(
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    episodes: int = 10,
    video: Path | None = None,
    video_size: int = 256,
    device: str = "cpu",
    seed: int = 0,
    imm_figure: Path | None = None,
    on_episode: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a saved agent for ``episodes`` episodes; optionally write the first one as a video (with the
    agent's keypoints drawn for keypoint agents) and, for agents with an IMM objective (sac_ae_imm, sac_imm), the
    IMM example figure of the first episode to ``imm_figure`` (a .png; a ConfigError for other agents).
    ``on_episode(index, return)`` is called after each episode (progress)."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if video_size < 16:
        raise ConfigError(f"--video-size must be >= 16, got {video_size}")
    if imm_figure is not None and Path(imm_figure).suffix.lower() != ".png":
        raise ConfigError(f"--imm-figure {imm_figure} must end with .png")
    agent, cfg, meta = load_agent(run_dir, checkpoint, device)
    if imm_figure is not None and agent.target_offset is None:
        raise ConfigError(
            f"--imm-figure needs an agent with an IMM objective (sac_ae_imm, sac_imm), not {cfg.agent}"
        )
    cfg.video_size = video_size
    result = evaluate_policy(agent, cfg, seed, episodes, video, imm_figure, on_episode)
    return {
        **meta,
        **result,
        **({"video": str(video)} if video else {}),
        **({"imm_figure": str(imm_figure)} if imm_figure else {}),
    }
