"""Shared test set-up. Importing kprl first sets MUJOCO_GL=egl before any test imports dm_control.

The tiny cartpole run that tests train is defined once, in ``tests/tiny.py``."""

import os

import kprl  # noqa: F401

os.environ.setdefault("MUJOCO_GL", "egl")
