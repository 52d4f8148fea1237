"""Write frame sequences as mp4 (imageio + the ffmpeg binary shipped in imageio-ffmpeg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 15) -> None:
    """Encode uint8 HWC frames to ``path`` atomically (a temp file renamed into place when complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame, dtype=np.uint8))
    os.replace(tmp, path)
