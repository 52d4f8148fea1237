"""The guard of refactors: the current code trains to the same numbers as a fixed baseline commit.

Runs resume with the code they started with, and results of one kprl version are compared with each other, so a
change that only moves code must not change any number. This test extracts ``src/kprl`` of the commit
``BASELINE`` (``git archive``), runs the same tiny training run (fp32, one thread, no video) with that code and
with the current code, each in its own interpreter, and compares ``eval.csv`` and ``train.csv`` column by column,
timing and memory columns aside. It also loads a checkpoint written by the baseline code with the current code.

When a change is *meant* to change numbers (a fix to a loss, a new default): bump kprl's version
(``kprl.__version__`` and ``pyproject.toml``, with a CHANGELOG entry) and move ``BASELINE`` to the commit of that
change, so the guard protects the new numbers from then on.

The test skips (with the reason) when git or the baseline commit is unavailable: a shallow clone or an install
without the repository.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BASELINE = "89d487f1f721dfcdd957bdbd5bd6e0fd5b4334b1"
"""The commit whose numbers the current code must reproduce (kprl 0.2.0)."""

REPO = Path(__file__).resolve().parents[1]
CURRENT_SRC = REPO / "src"

TIMING_COLUMNS = {"wall_hours", "env_steps_per_second", "eval_seconds", "peak_rss_mib"}

RUN_ARGS = [
    "--task", "cartpole_swingup", "--time-limit", "0.4", "--env-steps", "200", "--seed-steps", "80",
    "--batch-size", "8", "--hidden-dim", "32", "--num-filters", "8", "--latent-dim", "8", "--image-size", "64",
    "--eval-every", "80", "--eval-episodes", "1", "--checkpoint-every", "200", "--video", "False",
    "--threads", "1", "--precision", "fp32", "--seed", "3",
]  # fmt: skip

AGENTS = {
    "sac_ae": ["--agent", "sac_ae"],
    "sac_imm": ["--agent", "sac_imm", "--augmentation", "crop"],
}


def _baseline_src(tmp: Path) -> Path:
    """``src`` of the baseline commit, extracted under ``tmp``; skips when git or the commit is unavailable."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot extract the baseline code")
    probe = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BASELINE}^{{commit}}"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"baseline commit {BASELINE[:10]} is not in this checkout (shallow clone or no repository)")
    archive = tmp / "baseline.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", BASELINE, "src/kprl"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "baseline", filter="data")
    return tmp / "baseline" / "src"


def _train(src: Path, run_dir: Path, agent_args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    code = "import sys; from kprl.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "train", *RUN_ARGS, *agent_args, "--run-dir", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=300, cwd=run_dir.parent,
    )  # fmt: skip
    assert result.returncode == 0, f"training with {src} failed:\n{result.stderr[-3000:]}"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("same_numbers")
    baseline_src = _baseline_src(tmp)
    out: dict[str, tuple[Path, Path]] = {}
    for name, agent_args in AGENTS.items():
        pair = (tmp / f"{name}-baseline", tmp / f"{name}-current")
        _train(baseline_src, pair[0], agent_args)
        _train(CURRENT_SRC, pair[1], agent_args)
        out[name] = pair
    return out


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_logs_match_the_baseline(runs: dict[str, tuple[Path, Path]], agent: str) -> None:
    baseline, current = runs[agent]
    for name in ("eval.csv", "train.csv"):
        expected, got = _rows(baseline / name), _rows(current / name)
        assert expected, f"{baseline / name} is empty"
        assert [list(r) for r in got] == [list(r) for r in expected], f"{name}: columns differ"
        for i, (want, have) in enumerate(zip(expected, got, strict=True)):
            diff = {k: (want[k], have[k]) for k in want if want[k] != have[k]}
            assert not diff, f"{agent} {name} row {i}: (baseline, current) = {diff}"


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_baseline_checkpoint_loads(runs: dict[str, tuple[Path, Path]], agent: str) -> None:
    from kprl.errors import KprlError
    from kprl.rl.evaluate import load_agent

    baseline, _ = runs[agent]
    try:
        loaded, cfg, meta = load_agent(run_dir=baseline)
    except KprlError as exc:
        assert len(str(exc).splitlines()) == 1, f"a multi-line error: {exc}"
        return
    assert cfg.agent == agent and meta["env_step"] == 200
    assert type(loaded).__name__ == "SACAgent"
