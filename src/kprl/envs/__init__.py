"""Environments: dm_control tasks rendered to pixels, with action repeat, frame stacking and landmarks."""

from kprl.envs.dmc import (
    PLANET_ACTION_REPEAT,
    DMCEnv,
    Step,
    default_action_repeat,
    default_camera,
    landmark_names,
    landmark_points,
    project_points,
    rescale_action,
    split_task,
)

__all__ = [
    "PLANET_ACTION_REPEAT",
    "DMCEnv",
    "Step",
    "default_action_repeat",
    "default_camera",
    "landmark_names",
    "landmark_points",
    "project_points",
    "rescale_action",
    "split_task",
]
