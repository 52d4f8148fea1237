"""``kprl doctor``: is rendering and torch working on this machine?"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from kprl.errors import first_line
from kprl.runtime.hardware import native_bf16


def doctor(task: str = "cartpole_swingup", image_size: int = 84) -> dict[str, Any]:
    """Render one frame of ``task`` and report the GL backend, torch version/threads/device and CUDA."""
    report: dict[str, Any] = {
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "(unset)"),
        "torch": torch.__version__,
        "torch threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "bf16 on cpu": "native (--precision auto picks bf16)" if native_bf16(torch.device("cpu"))
        else "not native (--precision auto picks fp32)",
    }
    try:
        # Imported here, inside the try: a missing or broken simulator or GL backend is what doctor reports.
        import mujoco

        report["mujoco"] = mujoco.__version__
        from kprl.envs.dmc import DMCEnv  # inside the try too: it imports dm_control

        env = DMCEnv(task, image_size=image_size, seed=0)
        t0 = time.perf_counter()
        step = env.reset()
        report["render"] = "ok"
        report["frame"] = f"{tuple(step.frame.shape)} {step.frame.dtype}, mean {float(step.frame.mean()):.1f}"
        report["reset+render"] = f"{(time.perf_counter() - t0) * 1000:.1f} ms"
        env.close()
    except Exception as exc:  # report any backend failure instead of crashing
        first = first_line(exc)
        report["render"] = f"FAILED: {first}"
        report["hint"] = (
            "set MUJOCO_GL=egl (needs libEGL, e.g. Debian libegl1) or MUJOCO_GL=osmesa (Debian libosmesa6)"
        )
    return report
