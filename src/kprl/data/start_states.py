"""Where collected episodes start: the task's own initial state, or any state in view (``kprl collect --start``).

A task's reset covers few of the states an agent meets: cartpole swingup starts with the pole hanging, and random
actions rarely swing it up, so keypoints trained on such frames need never follow an upright pole. ``any`` starts
every episode from a state drawn over the whole range of each joint (a hinge without limits: any angle; a limited
joint: uniformly within its limits) with normally distributed velocities, redrawn until every landmark is inside
the frame (cartpole: the cart and the pole tip in view). Free and ball joints and unlimited slides keep the task's
values. Short episodes (``--time-limit``) from such starts reach states the task's reset never does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from dm_control.mujoco import engine
from mujoco import mjtJoint

from kprl.analysis.landmarks import inside_frame
from kprl.envs.dmc import landmark_points, project_points

START_STATES = ("task", "any")
VELOCITY_STD = 1.0
"""Standard deviation of each drawn joint velocity (m/s or rad/s): a swinging, not spinning, start."""
MAX_TRIES = 100
"""Draws before giving up on a state with every landmark in view (the last draw is kept)."""
# MuJoCo's joint kinds as plain ints: its enum does not compare equal to the numpy ints of model.jnt_type.
HINGE, SLIDE = int(mjtJoint.mjJNT_HINGE), int(mjtJoint.mjJNT_SLIDE)


def any_state(
    domain: str, camera_id: int, image_size: int, rng: np.random.Generator
) -> Callable[[engine.Physics], None]:
    """A ``place`` for `DMCEnv.reset` that draws the start as the module docstring says, from ``rng``."""

    def in_view(physics: engine.Physics) -> bool:
        points = project_points(physics, landmark_points(physics, domain), image_size, image_size, camera_id)
        return bool(inside_frame(points[None], image_size, image_size).all())

    def place(physics: engine.Physics) -> None:
        model, data = physics.model, physics.data
        for _ in range(MAX_TRIES):
            for joint in range(model.njnt):
                kind, address = int(model.jnt_type[joint]), int(model.jnt_qposadr[joint])
                if kind not in (HINGE, SLIDE):
                    continue
                if model.jnt_limited[joint]:
                    low, high = model.jnt_range[joint]
                    data.qpos[address] = rng.uniform(low, high)
                elif kind == HINGE:
                    data.qpos[address] = rng.uniform(-np.pi, np.pi)
            data.qvel[:] = rng.normal(0.0, VELOCITY_STD, size=model.nv)
            physics.forward()
            if in_view(physics):
                return

    return place
