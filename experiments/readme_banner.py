"""The README's opening picture: IMM keypoints (results/keypoints/cartpole_k3, trained with `kprl imm train`) on
cartpole swingup frames of a random-action episode, found through the Python API.

    .venv/bin/python experiments/readme_banner.py     # writes results/keypoints/cartpole_k3/figures/banner.png
"""

from pathlib import Path

import imageio.v3 as iio
import numpy as np

import kprl
from kprl.envs.dmc import DMCEnv
from kprl.viz.keypoints import draw_points

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "results" / "keypoints" / "cartpole_k3"

env = DMCEnv("cartpole_swingup", image_size=100, seed=3)
rng = np.random.default_rng(3)
frames = []
try:
    step = env.reset()
    for t in range(120):
        if t in (10, 45, 80, 115):
            frames.append(step.frame.transpose(1, 2, 0)[8:92, 8:92])  # the 84 px centre crop IMM evaluates on
        step = env.step(rng.uniform(-1, 1, size=env.action_dim))
finally:
    env.close()
points = kprl.load_keypoint_detector(RUN).detect(np.stack(frames))  # [4, K, 2] pixels of the 84 px crops
# Tiles at 168 px (pixels doubled), keypoints drawn at the doubled coordinates.
tiles = [draw_points(np.kron(f, np.ones((2, 2, 1), np.uint8)), p * 2) for f, p in zip(frames, points, strict=True)]
gap = np.full((168, 6, 3), 255, np.uint8)
banner = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
out = RUN / "figures" / "banner.png"
iio.imwrite(out, banner)
print(out, banner.shape, "keypoints per frame:", points.shape[1])
