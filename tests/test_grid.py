"""kprl grid: the grid file, the queue's decisions, background jobs from pinned code, resume, harvest, estimates."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from tiny import tiny_args

import kprl
from kprl import config as C
from kprl.errors import ConfigError
from kprl.grid.code import code_id, pin_code, pinned_provenance
from kprl.grid.commands import harvest_lines, run_what_fits, status_lines
from kprl.grid.estimate import CalibrationCache, observed_hours, observed_hours_per_env_step
from kprl.grid.harvest import harvest
from kprl.grid.jobs import GridHome, Launch, is_alive, progress, with_threads
from kprl.grid.queue import JobState, grid_states, plan
from kprl.grid.spec import load_grid
from kprl.runtime.checkpoint import checkpoint_steps
from kprl.runtime.provenance import code_version

# Cartpole episodes of 0.4 s (5 actions): a whole 400-env-step job with checkpoints takes seconds.
TINY = tiny_args(without=["threads"], env_steps=400, eval_episodes=1)  # a grid row may not set --threads


def write_grid(tmp: Path, rows: str, stages: str, args: list[str] | None = None) -> Path:
    path = tmp / "grid.toml"
    path.write_text(f'name = "g"\nresults = "results"\nargs = {json.dumps(args or TINY)}\n{rows}\n{stages}\n')
    return path


TWO_ROWS = """
[[row]]
name = "a"
args = ["--agent", "sac_ae"]
[[row]]
name = "b"
args = ["--agent", "sac_ae", "--augmentation", "crop"]
compare_to = "a"
"""


def test_jobs_come_stage_by_stage_then_seed_by_seed(tmp_path: Path) -> None:
    stages = '[[stage]]\nrows = ["a", "b"]\nseeds = [1]\n[[stage]]\nrows = ["a", "b"]\nseeds = [2, 3, 1]\n'
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, stages))
    assert [j.name for j in grid.jobs()] == ["a-s1", "b-s1", "a-s2", "b-s2", "a-s3", "b-s3"]
    assert grid.jobs()[1].train_args()[-4:] == ["--augmentation", "crop", "--seed", "1"]
    assert grid.comparisons() == [("b", "a")]
    assert grid.config("b").augmentation == "crop" and grid.env_steps == 400
    assert grid.results == (tmp_path / "results").resolve()


@pytest.mark.parametrize(
    "rows, stages, message",
    [
        (TWO_ROWS, '[[stage]]\nrows = ["c"]\nseeds = [1]', "unknown row 'c'"),
        ('[[row]]\nname = "a"\nargs = ["--seed", "3"]', '[[stage]]\nrows = ["a"]\nseeds = [1]', "sets --seed"),
        ('[[row]]\nname = "a"\nargs = ["--no-such-option", "1"]', '[[stage]]\nrows = ["a"]\nseeds = [1]',
         "no-such-option"),
        ('[[row]]\nname = "a/b"', '[[stage]]\nrows = ["a/b"]\nseeds = [1]', "names directories"),
        (TWO_ROWS, "", "no [[stage]]"),
        ('[[row]]\nname = "a"\ncompare_to = "z"', '[[stage]]\nrows = ["a"]\nseeds = [1]', "unknown row 'z'"),
        ("[[row]\n", "", "not valid TOML"),
    ],
)
def test_bad_grid_files_are_one_line_errors(tmp_path: Path, rows: str, stages: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as info:
        load_grid(write_grid(tmp_path, rows, stages))
    assert "\n" not in str(info.value)


def states_of(tmp_path: Path, kinds: list[str]) -> list[JobState]:
    rows = "".join(f'[[row]]\nname = "r{i}"\n' for i in range(len(kinds)))
    stage = f"[[stage]]\nrows = {json.dumps([f'r{i}' for i in range(len(kinds))])}\nseeds = [1]\n"
    grid = load_grid(write_grid(tmp_path, rows, stage))
    return [JobState(job, kind) for job, kind in zip(grid.jobs(), kinds, strict=True)]


def test_plan_pairs_jobs_that_fit_side_by_side_and_resumes_first(tmp_path: Path) -> None:
    states = states_of(tmp_path, ["done", "todo", "todo", "interrupted"])
    hours = {"r1": 1.0, "r2": 9.0, "r3": 1.5}
    picked = plan(states, 2.0, cores=2, busy_threads=0, estimate=lambda job, t: hours[job.row.name] * (2 / t) / 2)
    # r3 (interrupted) first; r2 does not fit; r1 does.
    assert [(d.state.job.row.name, d.threads) for d in picked] == [("r3", 1), ("r1", 1)]


def test_plan_falls_back_to_one_job_on_all_cores_then_to_fill(tmp_path: Path) -> None:
    states = states_of(tmp_path, ["todo", "todo"])
    one_thread, two_threads = {"r0": 3.0, "r1": 3.0}, {"r0": 4.0, "r1": 1.8}

    def estimate(job, threads):
        return (one_thread if threads == 1 else two_threads)[job.row.name]

    picked = plan(states, 2.0, 2, 0, estimate)
    assert [(d.state.job.row.name, d.threads) for d in picked] == [("r1", 2)]
    assert plan(states, 1.0, 2, 0, estimate) == []
    filled = plan(states, 1.0, 2, 0, estimate, fill=True)
    assert [(d.state.job.row.name, d.threads) for d in filled] == [("r0", 1), ("r1", 1)]
    assert plan(states, 9.0, 2, 2, estimate) == []  # both cores busy
    assert [d.threads for d in plan(states, 9.0, 2, 1, estimate)] == [1]


def test_jobs_unfinished_elsewhere_keep_their_place_in_the_queue(tmp_path: Path) -> None:
    # Restarting one costs a whole run, as does starting one never started: the queue's order decides.
    states = states_of(tmp_path, ["todo", "unfinished", "done", "todo", "interrupted"])
    picked = plan(states, 9.0, cores=2, busy_threads=0, estimate=lambda job, t: 1.0)
    assert [d.state.job.row.name for d in picked] == ["r4", "r0"]
    picked = plan(states[1:4], 9.0, cores=2, busy_threads=0, estimate=lambda job, t: 1.0)
    assert [d.state.job.row.name for d in picked] == ["r1", "r3"]


def test_interrupted_jobs_count_only_what_is_left_after_their_checkpoint(tmp_path: Path) -> None:
    states = states_of(tmp_path, ["interrupted", "unfinished"])
    states[0].env_step, states[0].env_steps, states[0].resume_step = 78_000, 100_000, 75_000
    assert [d.hours for d in plan(states[:1], 1.0, 1, 0, lambda job, t: 3.0)] == [0.75]
    # Harvested unfinished from another machine: it starts over here, however far it got there.
    states[1].env_step, states[1].env_steps = 60_000, 100_000
    assert [d.hours for d in plan(states[1:], 9.0, 1, 0, lambda job, t: 3.0)] == [3.0]


def test_plan_keeps_the_rounds_in_order_before_filling_both_cores(tmp_path: Path) -> None:
    # r0 (this round) fits only alone on both cores; r1 and r2 (the next round) fit side by side. r0 goes first.
    states = states_of(tmp_path, ["todo", "todo", "todo"])
    one_thread, two_threads = {"r0": 2.7, "r1": 2.5, "r2": 2.5}, {"r0": 1.4, "r1": 1.3, "r2": 1.3}

    def estimate(job, threads):
        return (one_thread if threads == 1 else two_threads)[job.row.name]

    assert [(d.state.job.row.name, d.threads) for d in plan(states, 2.6, 2, 0, estimate)] == [("r0", 2)]
    assert [(d.state.job.row.name, d.threads) for d in plan(states, 2.8, 2, 0, estimate)] == [("r0", 1), ("r1", 1)]


def test_only_restricts_the_choice_to_the_named_jobs(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, '[[stage]]\nrows = ["a", "b"]\nseeds = [1]'))
    home = GridHome(tmp_path / "home", grid.name)

    def estimate(job, threads):  # a-s1 never fits; b-s1 always does. Nothing here would start a-s1.
        return 99.0 if job.name == "a-s1" else 0.01

    lines = run_what_fits(grid, home, hours=1.0, cores=1, estimate=estimate, only=["a-s1"])
    assert lines == ["nothing started: no job fits 1.00 h (--fill starts one anyway); 2 jobs left"]
    with pytest.raises(ConfigError, match="--only c-s1: no such job in g"):
        run_what_fits(grid, home, hours=1.0, cores=1, estimate=estimate, only=["a-s1", "c-s1"])


def test_pinned_code_is_a_copy_that_knows_its_commit(tmp_path: Path) -> None:
    first = pin_code(tmp_path)
    assert pin_code(tmp_path) == first and first.name == code_id()
    assert (first / "kprl" / "grid" / "jobs.py").read_bytes() == (Path(kprl.__file__).parent / "grid/jobs.py").read_bytes()
    running = code_version()
    assert pinned_provenance(first)["git_commit"] == running["git_commit"]
    # The copy is outside git, yet code_version() of the copy reports the commit it came from.
    assert code_version(first / "kprl")["git_commit"] == running["git_commit"]


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_job_runs_in_the_background_resumes_with_its_code_and_is_harvested(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, '[[stage]]\nrows = ["a"]\nseeds = [1]'))
    home = GridHome(tmp_path / "home", grid.name)
    lines = run_what_fits(grid, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01)
    assert len(lines) == 1 and lines[0].startswith("a-s1: start")
    first = Launch.load(home.record_path("a-s1"))
    assert first is not None and first.pythonpath.startswith(str(home.root / "code"))
    run_dir = home.run_dir("a-s1")
    assert grid_states(grid, home)[0].state == "running"
    assert run_what_fits(grid, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01)[0].startswith("nothing")

    wait_for(lambda: bool(checkpoint_steps(run_dir)) and max(checkpoint_steps(run_dir)) >= 160)
    os.killpg(first.pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(first))
    state = grid_states(grid, home)[0]
    assert state.state == "interrupted" and not progress(run_dir).finished
    assert state.checkpoint == state.resume_step == max(checkpoint_steps(run_dir))
    (line,) = [line for line in status_lines(grid, home) if "a-s1" in line]
    assert f"checkpoint {state.checkpoint};" in line

    # Harvested while unfinished: marked so, and the report needs no finished run.
    harvest(grid, home)
    status = json.loads((grid.results / "runs" / "a-s1" / "status.json").read_text())
    assert status["finished"] is False and 160 <= status["last_env_step"] < 400

    lines = run_what_fits(grid, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01)
    assert lines[0].startswith("a-s1: resume")
    second = Launch.load(home.record_path("a-s1"))
    assert second.pythonpath == first.pythonpath and second.argv == first.argv and len(second.starts) == 2
    wait_for(lambda: not is_alive(second))
    assert grid_states(grid, home)[0].state == "done"
    runtime = [json.loads(line) for line in (run_dir / "runtime.jsonl").read_text().splitlines()]
    assert len(runtime) == 2 and runtime[1]["env_step"] >= 160  # resumed, not restarted
    assert runtime[1]["git_commit"] == code_version()["git_commit"]

    out = harvest_lines(grid, home)
    assert out[0] == "a-s1: 400 env steps (finished) from " + str(run_dir)
    dest = grid.results / "runs" / "a-s1"
    assert json.loads((dest / "status.json").read_text())["finished"] is True
    # Harvesting again with nothing new leaves status.json as it was (its time stamp has a resolution of 1 s).
    before = (dest / "status.json").read_bytes()
    time.sleep(1.1)
    harvest(grid, home)
    assert (dest / "status.json").read_bytes() == before
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "eval.csv", "runtime.jsonl", "status.json",
                                                     "train.csv"]  # fmt: skip
    assert (grid.results / "final_scores.md").is_file()
    assert "a-s1" in "\n".join(status_lines(grid, home)) and "1 done" in status_lines(grid, home)[-1]


def test_harvest_never_replaces_a_run_that_got_further(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, '[[stage]]\nrows = ["a"]\nseeds = [1]'))
    home = GridHome(tmp_path / "home", grid.name)
    dest = grid.results / "runs" / "a-s1"
    dest.mkdir(parents=True)
    (dest / "status.json").write_text(json.dumps({"finished": False, "last_env_step": 5000}))
    (dest / "eval.csv").write_text("env_step,episode_return\n5000,10\n")
    local = home.run_dir("a-s1")
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"env_steps": 400}))
    (local / "eval.csv").write_text("env_step,episode_return\n0,1\n80,2\n")
    lines = harvest(grid, home)
    assert lines == [f"a-s1: kept results/ (5000 env steps > 80 in {local})"]
    assert (dest / "eval.csv").read_text() == "env_step,episode_return\n5000,10\n"
    # A harvested run that is not local counts as unfinished elsewhere: to be started again here.
    shutil.rmtree(local)
    assert grid_states(grid, home)[0].state == "unfinished"


def test_harvest_leaves_out_a_run_that_has_not_stepped_yet(tmp_path: Path) -> None:
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, '[[stage]]\nrows = ["a"]\nseeds = [1]'))
    home = GridHome(tmp_path / "home", grid.name)
    local = home.run_dir("a-s1")
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"env_steps": 400}))
    (local / "eval.csv").write_text("env_step,episode_return\n0,1\n")
    assert harvest(grid, home) == [f"a-s1: nothing to harvest yet (0 env steps in {local})"]
    assert not (grid.results / "runs" / "a-s1").exists()
    (local / "eval.csv").write_text("env_step,episode_return\n0,1\n80,2\n")
    assert harvest(grid, home) == [f"a-s1: 80 env steps from {local}"]
    assert (grid.results / "runs" / "a-s1" / "eval.csv").read_text().endswith("80,2\n")


def fake_run(run_dir: Path, machine: str, threads: int, rows: list[tuple[int, int, float]]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "runtime.jsonl").write_text(json.dumps(
        {"machine": machine, "precision": "bf16", "threads": threads, "env_step": 0}) + "\n")  # fmt: skip
    with open(run_dir / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_step", "updates", "wall_hours"])
        writer.writerows(rows)
    return run_dir


def test_observed_speed_reads_train_csv_past_the_seed_phase(tmp_path: Path) -> None:
    rows = [(8000, 0, 0.01), (9000, 1000, 0.2), (19000, 2250, 0.4), (29000, 3500, 0.6)]
    run = fake_run(tmp_path / "r1", "cpu X, 2 cores", 1, rows)
    assert observed_hours_per_env_step(run, "cpu X, 2 cores, bf16", 1) == pytest.approx(0.4 / 20000)
    assert observed_hours_per_env_step(run, "cpu X, 2 cores, bf16", 2) is None
    assert observed_hours_per_env_step(run, "cpu Y, 2 cores, bf16", 1) is None
    other = fake_run(tmp_path / "r2", "cpu X, 2 cores", 1, [(9000, 1, 0.0), (19000, 2, 0.4)])
    assert observed_hours([run, other], 100_000, "cpu X, 2 cores, bf16", 1) == pytest.approx(3.0)  # median of 2e-5 and 4e-5 h per env step
    short = fake_run(tmp_path / "r3", "cpu X, 2 cores", 1, [(9000, 1, 0.0), (10000, 2, 0.1)])
    assert observed_hours([short], 100_000, "cpu X, 2 cores, bf16", 1) is None


def test_cli_exports_pending_jobs_and_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kprl.cli import main

    path = write_grid(tmp_path, TWO_ROWS, '[[stage]]\nrows = ["a", "b"]\nseeds = [4]')
    home = str(tmp_path / "home")
    assert main(["grid", "export", str(path), "--home", home, "--count", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"name": "a-s4", "argv": [*TINY, "--agent", "sac_ae", "--seed", "4"]}]
    assert main(["grid", "status", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kprl: error: no grid file") and err.count("\n") == 1
    assert main(["grid", "run", str(path), "--home", home, "--hours", "0"]) == 2
    assert "--hours must be > 0" in capsys.readouterr().err


def test_a_resumed_job_takes_the_threads_this_machine_plans_for_it() -> None:
    argv = ["train", "--agent", "sac_imm", "--threads", "1", "--seed", "1"]
    assert with_threads(argv, 2) == ["train", "--agent", "sac_imm", "--threads", "2", "--seed", "1"]
    assert argv[4] == "1"  # the launch record's command is not edited in place
    assert with_threads(["train"], 2) == ["train", "--threads", "2"]


def test_calibration_is_reused_when_only_checkpointing_or_logging_changes() -> None:
    base = C.TrainConfig()
    same = C.TrainConfig(checkpoint_every=2000, keep_checkpoints=3, log_every=500, seed=4)
    other = C.TrainConfig(batch_size=64)
    key = CalibrationCache.key
    assert key("m", base, 1) == key("m", same, 1)
    assert key("m", base, 1) != key("m", other, 1)
    assert key("m", base, 1) != key("m", base, 2)


def test_repin_resumes_with_the_grid_files_options_now_and_refuses_a_changed_method(tmp_path: Path) -> None:
    stages = '[[stage]]\nrows = ["a"]\nseeds = [1]'
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, stages))
    home = GridHome(tmp_path / "home", grid.name)
    run_what_fits(grid, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01)
    first = Launch.load(home.record_path("a-s1"))
    run_dir = home.run_dir("a-s1")
    wait_for(lambda: bool(checkpoint_steps(run_dir)) and max(checkpoint_steps(run_dir)) >= 160)
    os.killpg(first.pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(first))
    resume_from = max(checkpoint_steps(run_dir))

    changed = load_grid(write_grid(tmp_path, TWO_ROWS, stages, args=[*TINY, "--batch-size", "16"]))
    lines = run_what_fits(changed, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01, repin=True)
    assert lines[0].startswith("a-s1: not resumed: the grid file's options differ") and "batch_size" in lines[0]
    assert Launch.load(home.record_path("a-s1")) == first  # nothing launched, the record kept

    often = tiny_args(without=["threads"], env_steps=400, eval_episodes=1, checkpoint_every=40, keep_checkpoints=20)
    grid = load_grid(write_grid(tmp_path, TWO_ROWS, stages, args=often))
    lines = run_what_fits(grid, home, hours=1.0, cores=1, estimate=lambda job, t: 0.01, repin=True)
    assert lines[0].startswith("a-s1: resume") and "with the code pinned now" in lines[0]
    second = Launch.load(home.record_path("a-s1"))
    assert second.run_dir == first.run_dir and second.argv[second.argv.index("--checkpoint-every") + 1] == "40"
    wait_for(lambda: not is_alive(second))
    assert grid_states(grid, home)[0].state == "done"
    assert set(range(resume_from + 40, 401, 40)) <= set(checkpoint_steps(run_dir))
    evals = [int(r["env_step"]) for r in csv.DictReader(open(run_dir / "eval.csv", newline=""))]
    assert evals == [0, 80, 160, 240, 320, 400]
