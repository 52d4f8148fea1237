"""Render cartpole swingup once and step it: the check that dm_control, mujoco and the OpenGL backend work.

    MUJOCO_GL=egl python3 experiments/gpu/render_check.py [--expect-under SITE] [--png FRAME.png]

Prints where dm_control and mujoco were imported from, the GL backend, the frame's shape and mean, and the time of
a rendered step; exits non-zero on any failure, or when ``--expect-under`` is given and dm_control was not imported
from under that folder (so a trimmed copy is really the one tested).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render cartpole swingup once and step it.")
    parser.add_argument("--expect-under", type=Path, help="fail unless dm_control is imported from this folder")
    parser.add_argument("--png", type=Path, help="also save the frame as a PNG")
    parser.add_argument("--steps", type=int, default=20, help="rendered steps to time")
    args = parser.parse_args(argv)

    import dm_control
    import mujoco
    import numpy as np
    from dm_control import suite

    where = Path(dm_control.__file__).resolve().parent
    print(f"dm_control {where}")
    print(f"mujoco {mujoco.__version__} {Path(mujoco.__file__).resolve().parent}")
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    if args.expect_under is not None and not where.is_relative_to(args.expect_under.resolve()):
        sys.exit(f"render_check: dm_control came from {where}, not from under {args.expect_under}")

    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
    env.reset()
    frame = env.physics.render(height=84, width=84, camera_id=0)
    if frame.shape != (84, 84, 3) or frame.dtype != np.uint8 or frame.std() == 0:
        sys.exit(f"render_check: bad frame {frame.shape} {frame.dtype} std {frame.std():.2f}")
    print(f"frame {frame.shape} mean {frame.mean():.1f} std {frame.std():.1f}")
    action = np.zeros(env.action_spec().shape)
    start = time.perf_counter()
    for _ in range(args.steps):
        env.step(action)
        env.physics.render(height=84, width=84, camera_id=0)
    print(f"{args.steps} rendered steps: {(time.perf_counter() - start) / args.steps * 1e3:.2f} ms each")
    if args.png is not None:
        from PIL import Image

        Image.fromarray(frame).save(args.png)
        print(f"frame saved to {args.png}")
    print("render_check OK")


if __name__ == "__main__":
    main()
