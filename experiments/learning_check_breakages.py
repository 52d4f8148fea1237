"""Does the fast suite's learning check fail when learning breaks? Runs the check of tests/test_learning.py (two
seeds side by side) on the real code and with one deliberate breakage of the algorithm at a time, and prints one
JSON line per case: each seed's final return, the random policy's return on the same episodes, and whether the
test's margins would pass.

    .venv/bin/python experiments/learning_check_breakages.py                    # every case, seeds 1,2
    .venv/bin/python experiments/learning_check_breakages.py td_sign --seeds 3,4 --out results/learning_test/x.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_learning as check  # noqa: E402

import kprl.rl.train as train_module  # noqa: E402
from kprl.rl.sac import SACAgent  # noqa: E402

CASES = ("none", "td_sign", "actor_frozen", "next_obs_shuffled", "reward_dropped")


def apply(case: str) -> None:
    """Patch the algorithm in this process (the workers are fresh interpreters, so nothing leaks)."""
    if case == "td_sign":  # y = r - gamma d V' instead of r + gamma d V'
        td_target = SACAgent._td_target

        def flipped(self, reward, next_obs, discount, next_maps=None):  # type: ignore[no-untyped-def]
            return 2 * reward - td_target(self, reward, next_obs, discount, next_maps)

        SACAgent._td_target = flipped  # type: ignore[method-assign]
    elif case == "actor_frozen":  # the actor's optimiser never moves it
        make_agent = train_module.make_agent

        def frozen(*args, **kwargs):  # type: ignore[no-untyped-def]
            agent = make_agent(*args, **kwargs)
            for group in agent.actor_opt.param_groups:
                group["lr"] = 0.0
            return agent

        train_module.make_agent = frozen  # type: ignore[assignment]
    elif case in ("next_obs_shuffled", "reward_dropped"):
        update = SACAgent.update

        def broken(self, batch, step, generator=None):  # type: ignore[no-untyped-def]
            if case == "next_obs_shuffled":  # each transition gets another transition's next observation
                batch = batch._replace(next_obs=batch.next_obs[torch.randperm(batch.next_obs.shape[0])])
            else:  # the critic never sees a reward
                batch = batch._replace(reward=torch.zeros_like(batch.reward))
            return update(self, batch, step, generator)

        SACAgent.update = broken  # type: ignore[method-assign]
    elif case != "none":
        raise ValueError(f"unknown case {case!r} ({', '.join(CASES)})")


def run(case: str, run_dir: Path, seed: int) -> tuple[float, float]:
    apply(case)
    return check.train_and_score(run_dir, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--seeds", default=",".join(str(s) for s in check.SEEDS))
    parser.add_argument("--work", type=Path, default=Path("runs/learning_check"))
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for case in args.cases:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(len(seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run, case, args.work / f"{case}_s{s}", s) for s in seeds]
            scores = [f.result() for f in futures]
        gains = [r - b for r, b in scores]
        passes = min(gains) >= check.SEED_MARGIN and sum(gains) / len(gains) >= check.MEAN_MARGIN
        line = json.dumps({"case": case, "seeds": seeds, "final_return": [round(r, 1) for r, _ in scores],
                           "random_return": [round(b, 1) for _, b in scores], "test_passes": passes,
                           "wall_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(line, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
