"""One door to every pixel environment: dm_control tasks by name, Gymnasium ones as ``gym:ID``."""

from __future__ import annotations

from kprl import config as C
from kprl.envs.dmc import DMCEnv, default_action_repeat, split_task
from kprl.envs.gym import GymEnv, check_gym_task, is_gym_task
from kprl.errors import ConfigError, KprlError, first_line

PixelEnv = DMCEnv | GymEnv
"""What the training loop, evaluation and collection talk to (the same interface)."""


def check_task(task: str) -> None:
    """A one-line :class:`ConfigError` for a task that is neither a dm_control task nor a registered ``gym:ID``."""
    if is_gym_task(task):
        check_gym_task(task)
        return
    try:
        split_task(task)
    except ValueError as exc:
        raise ConfigError(f"{exc}, or gym:ID for a Gymnasium environment") from exc


def task_action_repeat(task: str) -> int:
    """The default action repeat of a task: PlaNet's per dm_control domain, 1 for Gymnasium environments."""
    return 1 if is_gym_task(task) else default_action_repeat(task)


def make_pixel_env(
    task: str,
    image_size: int = 84,
    action_repeat: int | None = None,
    frame_stack: int = 3,
    camera_id: int | None = None,
    seed: int = 0,
    time_limit: float | None = None,
) -> PixelEnv:
    """The environment of ``task`` rendering ``image_size`` px frames (see `DMCEnv` and `GymEnv` for the args)."""
    cls = GymEnv if is_gym_task(task) else DMCEnv
    return cls(task, image_size=image_size, action_repeat=action_repeat, frame_stack=frame_stack,
               camera_id=camera_id, seed=seed, time_limit=time_limit)  # fmt: skip


RENDER_ERROR_WORDS = ("GL", "EGL", "OSMesa", "glfw", "render", "display")
"""Words by which a failure to make an env is recognised as a missing or broken GL backend."""


def render_error(exc: BaseException) -> KprlError | None:
    """A one-line :class:`KprlError` that explains ``MUJOCO_GL`` when ``exc`` (raised while making an env) is a
    rendering failure, else None (re-raise ``exc`` as it is)."""
    if not any(word in str(exc) for word in RENDER_ERROR_WORDS):
        return None
    return KprlError(
        f"cannot render dm_control frames ({first_line(exc)}); set MUJOCO_GL=egl (libEGL) or MUJOCO_GL=osmesa "
        "(libosmesa6) and check with `kprl doctor`"
    )


def make_env(cfg: C.TrainConfig, seed: int) -> PixelEnv:
    """The pixel environment of a config, rendering at the stored size (larger than the input for crop).

    Rendering failures (no GL backend) become a :class:`KprlError` that explains ``MUJOCO_GL``."""
    try:
        return _make_env(cfg, seed)
    except (ImportError, RuntimeError, OSError) as exc:
        if (error := render_error(exc)) is not None:
            raise error from exc
        raise


def _make_env(cfg: C.TrainConfig, seed: int) -> PixelEnv:
    return make_pixel_env(
        cfg.env.task,
        image_size=C.render_size(cfg),
        action_repeat=cfg.env.action_repeat,
        frame_stack=cfg.env.frame_stack,
        camera_id=cfg.env.camera_id,
        seed=seed,
        time_limit=cfg.env.time_limit,
    )
