"""SAC+AE learns: a short real run on cartpole swingup must end clearly above its untrained policy.

About a CPU minute: 32 px images, small networks, 6000 env steps (625 updates). Measured with seeds 1, 2, 3 on the
2-core CPU (logs in results/learning_test/, same configuration with eval every 2000): eval return 17 / 30 / 11 at step 0 and 130 / 140 / 157 at 6000; a random
policy scores about 25. A sign error in the TD target, the actor loss or the temperature loss keeps the return near
its start, so this test fails on it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from kprl.config import TrainConfig
from kprl.train import train


def test_sac_ae_learns_cartpole_swingup_from_pixels_in_a_cpu_minute(tmp_path: Path) -> None:
    cfg = TrainConfig(run_dir=tmp_path / "run", seed=1, env_steps=6000, seed_steps=1000, batch_size=64,
                      eval_every=6000, eval_episodes=3, checkpoint_every=100_000, video=False,
                      seed_update_burst=False)  # fmt: skip
    cfg.env.image_size = 32
    cfg.sac.hidden_dim = 256
    cfg.encoder.num_filters = 16
    cfg.encoder.latent_dim = 32
    train(cfg, quiet=True)
    with open(tmp_path / "run" / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    start, end = float(rows[0]["episode_return"]), float(rows[-1]["episode_return"])
    assert int(rows[-1]["env_step"]) == 6000
    assert end >= 100.0 and end >= 3 * start, f"no learning: eval return {start:.1f} -> {end:.1f}"
