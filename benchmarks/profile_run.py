"""Where a real training run's wall time goes: py-spy samples of a running `kprl train` process, grouped by stage of
the training loop. Prints one JSON object (e.g. results/profile_run/sac_imm_k32_crop_zen4.json).

Sample a run without stopping it (py-spy reads the process from outside; a few percent of one core), then group:

    py-spy record --pid PID --duration 150 --rate 20 --nonblocking --format raw -o run.txt
    python benchmarks/profile_run.py run.txt [--label "sac_imm crop K=32, Zen 4, 2 threads"]

Unlike ``profile_update.py`` (torch.profiler on one update of a random replay), this sees everything a run does:
acting and rendering, replay sampling, augmentation, evaluation, checkpoints and the update's parts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

# (stage, file, function or None for any function in the file). A sample goes to the first stage that any frame of
# its stack matches, so the order decides: evaluation steps the environment too, and counts as evaluation.
STAGES: tuple[tuple[str, str, str | None], ...] = (
    ("evaluation", "kprl/rl/train.py", "_evaluate_and_log"),
    ("checkpoints", "kprl/rl/train.py", "_checkpoint"),
    ("update: auxiliary losses, backward", "kprl/rl/sac.py", "objective_gradients"),
    ("update: auxiliary losses, forward", "kprl/rl/sac.py", "auxiliary_losses"),
    ("update: TD target (next observation, no gradient)", "kprl/rl/sac.py", "td_target"),
    ("replay sampling", "kprl/rl/replay.py", None),
    ("augmentation", "kprl/rl/augment.py", None),
    ("update: critic and actor (forward, backward, optimiser steps)", "kprl/rl/sac.py", "update"),
    ("acting and rendering", "kprl/envs/", None),
    ("acting and rendering", "kprl/rl/sac.py", "act"),
)
OTHER = "other (logging, progress, Python)"


def frame_matches(frame: str, path: str, function: str | None) -> bool:
    """Whether a py-spy frame ``function (file:line)`` lies in ``path`` (and in ``function``, if given)."""
    name, _, where = frame.partition(" (")
    return path in where and (function is None or name == function)


def stage_of(stack: list[str]) -> str:
    for stage, path, function in STAGES:
        if any(frame_matches(frame, path, function) for frame in stack):
            return stage
    return OTHER


def group(lines: list[str]) -> tuple[int, Counter[str]]:
    """Samples in total and per stage, from py-spy's raw format (``frame;frame;... count`` per line)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";"))] += int(count)
    return sum(counts.values()), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--label", default="", help="what was sampled (agent, CPU, threads)")
    opts = parser.parse_args()
    try:
        lines = opts.samples.read_text().splitlines()
    except OSError as exc:
        raise SystemExit(f"profile_run.py: cannot read {opts.samples}: {exc.strerror}") from None
    total, counts = group(lines)
    if total == 0:
        raise SystemExit(f"profile_run.py: {opts.samples} holds no py-spy raw samples")
    shares = {stage: round(100 * n / total, 1) for stage, n in counts.most_common()}
    print(json.dumps({"label": opts.label, "samples": total, "percent_of_wall_time": shares}, indent=1))


if __name__ == "__main__":
    main()
