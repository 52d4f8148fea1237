"""Re-evaluate a saved agent (``kprl eval``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kprl import config as C
from kprl.agents.factory import make_agent
from kprl.agents.sac import SACAgent
from kprl.checkpoint import CHECKPOINT_DIR, find_checkpoint, load_state
from kprl.errors import CheckpointError, ConfigError


def load_agent(
    run_dir: Path | None = None, checkpoint: Path | None = None, device: str = "cpu"
) -> tuple[SACAgent, C.TrainConfig, dict[str, Any]]:
    """Build the agent of a run and load its newest checkpoint (or the given one).

    Returns (agent, config, checkpoint metadata with ``env_step``)."""
    from kprl.envs.dmc import DMCEnv  # noqa: F401  (imports dm_control with MUJOCO_GL set)
    from kprl.hardware import resolve_device

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
            f"checkpoint {ckpt} does not fit agent {cfg.agent}: {str(exc).splitlines()[0]}"
        ) from exc
    return agent, cfg, {"env_step": int(state["env_step"]), "checkpoint": str(ckpt)}


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
    from kprl.train import evaluate

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
    result = evaluate(agent, cfg, seed, episodes, video, imm_figure, on_episode)
    return {
        **meta,
        **result,
        **({"video": str(video)} if video else {}),
        **({"imm_figure": str(imm_figure)} if imm_figure else {}),
    }
