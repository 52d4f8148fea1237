"""benchmarks/profile_run.py: py-spy samples of a run grouped by stage of the training loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("profile_run", REPO / "benchmarks" / "profile_run.py")
assert spec is not None and spec.loader is not None
profile_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_run)


def test_every_stage_names_code_that_exists() -> None:
    # A renamed function would silently move its samples to "other"; this says which rule went stale.
    for stage, path, function in profile_run.STAGES:
        target = REPO / "src" / path
        files = sorted(target.glob("*.py")) if path.endswith("/") else [target]
        assert files and all(f.is_file() for f in files), (stage, path)
        if function is not None:
            assert any(f"def {function}(" in f.read_text() for f in files), (stage, path, function)


def test_samples_go_to_the_first_stage_their_stack_matches() -> None:
    loop = "<module> (<string>:1);main (kprl/cli.py:632);train (kprl/rl/train.py:425)"
    lines = [
        f"{loop};run (kprl/rl/train.py:376);_evaluate_and_log (kprl/rl/train.py:199);step (kprl/envs/dmc.py:326) 3",
        f"{loop};update (kprl/rl/sac.py:346);objective_gradients (kprl/rl/sac.py:473) 5",
        f"{loop};update (kprl/rl/sac.py:346);fast_update (kprl/rl/fast_update.py:70) 2",
        f"{loop};step (kprl/envs/dmc.py:334);_render_frame (kprl/envs/dmc.py:392) 1",
        f"{loop};log (kprl/runtime/logger.py:10) 1",
        "not a sample line",
    ]
    total, counts = profile_run.group(lines)
    assert total == 12
    assert counts == {
        "evaluation": 3,  # its environment steps count as evaluation, not acting
        "update: auxiliary losses, backward": 5,
        "update: critic and actor (forward, backward, optimiser steps)": 2,
        "acting and rendering": 1,
        profile_run.OTHER: 1,
    }
