"""kprl: control from pixels with self-supervised keypoints (SAC+AE, IMM, SAC+AE+IMM and SAC+IMM).

The Python API (docs/python-api.md) is importable from here: ``kprl.make_config``, ``kprl.train_agent``,
``kprl.evaluate_agent``, ``kprl.load_policy``, ``kprl.make_gym_env``, ``kprl.load_keypoint_detector``,
``kprl.TrainConfig``. It is loaded on
first use, so ``import kprl`` (and the CLI's start) stays light.
"""

import os as _os
from typing import Any as _Any

# dm_control picks its GL backend at import time; EGL renders headless on CPU (Mesa) and GPU machines.
_os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.2.0"

_API = ("make_config", "train_agent", "evaluate_agent", "load_policy", "make_gym_env", "load_keypoint_detector", "Policy",
        "KeypointDetector", "TrainConfig")  # fmt: skip
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> _Any:
    if name in _API:
        # Loaded on first use, so `import kprl` and the CLI's start stay light (the API imports torch).
        from kprl import api

        return getattr(api, name)
    raise AttributeError(f"module 'kprl' has no attribute {name!r}")
