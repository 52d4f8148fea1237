"""SAC+AE learns from pixels: short real runs must end clearly above a uniformly random policy.

This is the check that fails when learning breaks (a wrong sign in a loss, an optimiser that never steps, transitions
whose next observation does not belong to them); the 100k-step learning evidence lives in results/, not here.

Task and scale: Gymnasium's MuJoCo InvertedPendulum-v5 from 32 px pixels (3 stacked frames, action repeat 4), an
8-filter conv trunk, 128-unit MLPs, batch 64, fp32, 3000 agent steps; two seeds trained side by side in two
processes, one thread each (about 1.5 minutes on two cores). The pendulum's episode ends when the pole tilts past
0.2 rad, so every step of balance is rewarded at once: this is where SAC from pixels learns in a budget the fast
suite can afford (cartpole balance and swingup at this scale stay near random for thousands of updates).

Measured on a 2-core Xeon (results/learning_test/): a uniformly random policy scores 3-6 on these episodes and the
untrained agent's deterministic policy about 11; seeds 1-4 end at 43.6, 60.2, 44.4 and 46.8. With a flipped sign in
the TD target (3.0, 3.6), an actor that never steps (8.6, 16.2) or a reward the critic never sees (11.1, 9.9) the
check fails (experiments/learning_check_breakages.py). It does not catch next observations shuffled within the batch
(40.8, 47.5): the termination flag alone teaches a one-step policy that avoids falling.
"""

from __future__ import annotations

import csv
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kprl.config import TrainConfig
from kprl.envs.factory import make_env
from kprl.rl.train import EVAL_SEED_OFFSET, train

ENV_STEPS = 12_000
SEEDS = (1, 2)
EPISODES = 10
# Above the random policy's return on the same episodes, every seed and on average over the seeds. Both are above
# what the untrained policy scores (~11), so an agent that does not learn fails.
SEED_MARGIN = 15.0
MEAN_MARGIN = 25.0


def learning_config(run_dir: Path, seed: int) -> TrainConfig:
    cfg = TrainConfig(run_dir=run_dir, seed=seed, env_steps=ENV_STEPS, seed_steps=1000, batch_size=64,
                      eval_every=ENV_STEPS, eval_episodes=EPISODES, checkpoint_every=10 * ENV_STEPS, video=False,
                      seed_update_burst=False, threads=1, precision="fp32")  # fmt: skip
    cfg.env.task = "gym:InvertedPendulum-v5"
    cfg.env.image_size = 32
    cfg.env.action_repeat = 4
    cfg.sac.hidden_dim = 128
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    return cfg


def random_policy_return(cfg: TrainConfig, env_step: int, seed: int) -> float:
    """Mean return of uniform random actions on the episodes the evaluation at ``env_step`` played (its env seed)."""
    env = make_env(cfg, cfg.seed + EVAL_SEED_OFFSET + env_step)
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for _ in range(cfg.eval_episodes):
            step, total = env.reset(), 0.0
            while not step.last:
                step = env.step(rng.uniform(-1, 1, env.action_dim))
                total += step.reward
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns))


def train_and_score(run_dir: Path, seed: int) -> tuple[float, float]:
    """(final evaluation return, random policy's return on the same episodes) of one short run."""
    cfg = learning_config(run_dir, seed)
    train(cfg, quiet=True)
    with open(run_dir / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    final_step = int(rows[-1]["env_step"])
    assert final_step >= ENV_STEPS
    return float(rows[-1]["episode_return"]), random_policy_return(cfg, final_step, seed)


def test_sac_ae_learns_inverted_pendulum_from_pixels(tmp_path: Path) -> None:
    # Two fresh interpreters (spawn): each run is one single-threaded process, as a run on one core would be.
    with ProcessPoolExecutor(len(SEEDS), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_score, tmp_path / f"seed{seed}", seed) for seed in SEEDS]
        scores = [future.result() for future in futures]
    report = ", ".join(f"seed {s}: {r:.1f} vs random {b:.1f}" for s, (r, b) in zip(SEEDS, scores, strict=True))
    gains = [r - b for r, b in scores]
    assert min(gains) >= SEED_MARGIN, f"a seed did not learn: {report}"
    assert float(np.mean(gains)) >= MEAN_MARGIN, f"no learning on average: {report}"
