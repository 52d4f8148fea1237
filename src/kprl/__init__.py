"""kprl: control from pixels with self-supervised keypoints (SAC+AE, IMM, SAC+AE+IMM, SAC+IMM)."""

import os as _os

# dm_control picks its GL backend at import time; EGL renders headless on CPU (Mesa) and GPU machines.
_os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
