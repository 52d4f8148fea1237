"""Progress and ETA: the ETA projects each phase of a run at its own measured rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from kprl.runtime.progress import Rate, RunEta, format_seconds


def test_rate_averages_over_its_window() -> None:
    rate = Rate()
    assert rate.per_unit is None
    rate.add(2.0, 4)
    rate.add(6.0, 4)
    rate.add(1.0, 0)  # no units: ignored
    assert rate.per_unit == pytest.approx(1.0)


def test_eta_projects_each_phase_at_its_own_rate() -> None:
    eta = RunEta(total=100_000, seed_env_steps=8000, eval_every=10_000, burst_updates=1000)
    eta.acting.add(8.0, 1000)  # 8 ms per random env step
    assert eta.seconds_left(1000, 8) is None  # the update rate is not known yet
    eta.updates.add(50.0, 100)  # 0.5 s per update
    eta.evaluations.add(40.0, 1)
    # 7000 random env steps, 1000 burst updates, 92k learning env steps at 8 ms + 0.5 s / 8, 10 evaluations.
    expected = 7000 * 0.008 + 1000 * 0.5 + 92_000 * (0.008 + 0.5 / 8) + 10 * 40
    assert eta.seconds_left(1000, 8) == pytest.approx(expected)
    # Once learning episodes are measured, their rate replaces the estimate from acting + updates.
    eta.burst_updates = 0
    eta.learning.add(70.0, 1000)
    assert eta.seconds_left(50_000, 8) == pytest.approx(50_000 * 0.07 + 5 * 40)
    assert eta.evaluations_after(100_000) == 0 and eta.evaluations_after(99_999) == 1


def test_format_seconds() -> None:
    assert format_seconds(None) == "?"
    assert format_seconds(247) == "4m07s"
    assert format_seconds(3900) == "1h05m"


def test_plain_output_reports_the_seed_burst_and_an_eta(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kprl.config import TrainConfig
    from kprl.rl.train import train

    cfg = TrainConfig(run_dir=tmp_path / "run", env_steps=200, seed_steps=80, batch_size=8, eval_every=80,
                      eval_episodes=1, checkpoint_every=80, video=False, threads=1, log_every=40)  # fmt: skip
    cfg.env.time_limit, cfg.env.image_size = 0.4, 64
    cfg.sac.hidden_dim, cfg.encoder.num_filters, cfg.encoder.latent_dim = 32, 8, 8
    train(cfg)
    out = capsys.readouterr().out
    assert "seed burst 10/10 updates" in out  # 80 seed env steps = 10 actions = a burst of 10 updates
    lines = [line for line in out.splitlines() if line.startswith("train env_step")]
    # Unknown (?) until the burst has timed the updates; measured after it.
    after_burst = [line for line in lines if int(line.split()[2].split("/")[0]) > 80]
    assert after_burst and all("ETA ?" not in line and "ETA " in line for line in after_burst)
    assert "\x1b[" not in out  # no terminal codes when stdout is not a terminal

    from kprl.cli import main

    assert main(["eval", "--run-dir", str(tmp_path / "run"), "--episodes", "2"]) == 0
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["episode 1/2", "episode 2/2"]
    assert captured.out.startswith("{")  # stdout stays one JSON line


def test_console_draws_bars_on_a_terminal(capsys: pytest.CaptureFixture) -> None:
    from kprl.runtime.progress import Console

    console = Console(live=True)
    task = console.task("work", total=4)
    task.update(completed=2, info="half")
    console.line("a line above the bars")
    task.done()
    console.close()
    assert "a line above the bars" in capsys.readouterr().out
    quiet = Console(quiet=True)
    quiet.line("nothing")
    quiet.task("x", 1).update(completed=1)
    assert capsys.readouterr().out == ""
