"""kprl from Python, as in a notebook: configure, train, evaluate, act, find keypoints.

    python examples/python_api.py                 # SAC+IMM on cartpole swingup for 20k env steps (~40 min, 2 cores)
    python examples/python_api.py --quick         # a tiny run in seconds (what the tests execute)

Every call is the library's public API (docs/python-api.md); rerunning resumes the training where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import kprl
from kprl.viz.keypoints import draw_points

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("runs/example-api"))
parser.add_argument("--quick", action="store_true", help="tiny networks, short episodes, a few hundred env steps")
args = parser.parse_args()

# 1. A configuration: any `kprl train` option by name; a bad name or value raises kprl.errors.ConfigError.
options = {"augmentation": "crop", "imm_lr": 2e-4, "env_steps": 20_000, "eval_every": 5_000, "eval_episodes": 5}
if args.quick:
    options.update(env_steps=240, seed_steps=80, eval_every=80, eval_episodes=2, checkpoint_every=80, batch_size=8,
                   hidden_dim=32, num_filters=8, latent_dim=8, image_size=64, time_limit=0.4, video=False, threads=1)
cfg = kprl.make_config(agent="sac_imm", task="cartpole_swingup", run_dir=args.out / "run", **options)

# 2. Train; every evaluation row arrives in the callback as it is logged.
returns: list[tuple[int, float]] = []
summary = kprl.train_agent(cfg, on_eval=lambda row: returns.append((row["env_step"], row["episode_return"])))
print("trained:", json.dumps(summary))
print("evaluations (env step, return):", returns)

# 3. Evaluate the saved agent again, on other episodes.
result = kprl.evaluate_agent(cfg.run_dir, episodes=2, seed=7)
print("re-evaluated return:", round(result["episode_return"], 2), "at env step", result["env_step"])

# 4. Act: one episode in the agent's own environment, keeping the frames and the agent's keypoints.
policy = kprl.load_policy(cfg.run_dir)
env = policy.make_env(seed=123)
frames, agent_points, total = [], [], 0.0
try:
    step = env.reset()
    while not step.last:
        frames.append(step.frame.transpose(1, 2, 0))  # uint8 [H, W, 3]
        agent_points.append(policy.keypoints(step.obs))  # [K, 2] pixel (x, y) in the frame
        step = env.step(policy.act(step.obs))
        total += step.reward
finally:
    env.close()
print(f"episode return {total:.2f} over {len(frames)} actions")

# 5. Keypoints on an array of frames: with the agent's own keypoint network, and with the standalone IMM model
#    committed in results/keypoints/cartpole_k3 (kprl imm train on 100 px cartpole frames).
video = np.stack(frames)
by_agent = kprl.load_keypoint_detector(cfg.run_dir).detect(video)
print("agent keypoints:", by_agent.shape)
assert np.allclose(by_agent[-1], agent_points[-1], atol=1.0)  # the same keypoints either way (frame resampling aside)
imm_run = Path(__file__).resolve().parent.parent / "results" / "keypoints" / "cartpole_k3"
by_imm = kprl.load_keypoint_detector(imm_run).detect(video)
print("IMM keypoints:", by_imm.shape)

# 6. A picture: the last frame with the agent's keypoints.
args.out.mkdir(parents=True, exist_ok=True)
import imageio.v3 as iio  # noqa: E402

picture = draw_points(np.array(video[-1]), by_agent[-1])
iio.imwrite(args.out / "keypoints.png", picture)
print("wrote", args.out / "keypoints.png")
