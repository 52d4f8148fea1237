"""Run a list of `kprl train` jobs side by side until a deadline, then pack their logs for the trip home.

Called by `experiments/gpu/run_grid.sh run`; usable on its own:

    python3 experiments/gpu/launch.py --jobs JOBS.jsonl --out OUT --deadline-s 540 [--device cuda]

JOBS.jsonl holds one job a line: ``{"name": "sac_ae-none-s1", "argv": ["--agent", "sac_ae", ...]}``, where argv
is `kprl train` options without --run-dir, --device, --threads and --video (the launcher sets those). Every job
gets ``--run-dir GRID_DIR/<name>`` (checkpoints stay there), its output goes to ``GRID_DIR/<name>.stdout.log``,
and at most ``--parallel`` run at once. At the deadline (seconds after ``--started-at``) the jobs still running
get SIGTERM, then SIGKILL ``--grace-s`` later; jobs not started by then are not started. Then:

- ``OUT/runs.tar.gz``: per job ``<name>/config.json, eval.csv, train.csv, runtime.jsonl``, the last
  ``figures/imm_example_*.png`` and ``videos/*.mp4`` if any, ``stdout.log``, and ``gpu_status.json`` =
  ``{"name", "exit_code", "finished", "last_env_step", "wall_s", ...}`` (finished: `kprl train` exited 0);
- ``OUT/gpu_run.log`` (appended): GPU samples while running, each job's status, updates/s and output tail.

Standard library only (it runs before anything else is installed).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED = ("--run-dir", "--device", "--threads", "--video", "--no-video")
LOGS = ("config.json", "eval.csv", "train.csv", "runtime.jsonl")
TAR_LIMIT_BYTES = 15 * 2**20  # a file back from $OUT may hold 16 MiB
GPU_SAMPLE_EVERY_S = 30.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    killed_at_deadline: bool = False
    stdout_path: Path | None = None
    extra: dict = field(default_factory=dict)


def load_jobs(path: Path) -> list[Job]:
    """Parse and check a jobs file; raises ValueError naming the line at fault."""
    jobs: list[Job] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with name and argv")
        name, argv = entry.get("name"), entry.get("argv")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{where}: name must be letters, digits, '.', '_' and '-' (got {name!r})")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"{where}: argv must be a list of strings")
        reserved = [a for a in argv if a.split("=", 1)[0] in RESERVED]
        if reserved:
            raise ValueError(f"{where}: {reserved} are set by the launcher; leave them out of argv")
        if any(j.name == name for j in jobs):
            raise ValueError(f"{where}: job name {name!r} used twice")
        jobs.append(Job(name, argv))
    if not jobs:
        raise ValueError(f"{path}: no jobs")
    return jobs


def threads_per_job(n_jobs: int, parallel: int, cpus: int) -> int:
    """Torch threads for each job so that the jobs running at once share the cores."""
    return max(1, cpus // max(1, min(n_jobs, parallel)))


def train_command(python: str, job: Job, *, device: str, threads: int, video: bool, run_dir: Path) -> list[str]:
    """The `kprl train` command line of ``job``."""
    return [python, "-m", "kprl", "train", *job.argv, "--device", device, "--threads", str(threads),
            "--video" if video else "--no-video", "--run-dir", str(run_dir)]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def last_env_step(run_dir: Path) -> int | None:
    """The largest env_step in the run's eval.csv and train.csv; None when neither has a row."""
    steps = [_number(r.get("env_step")) for name in ("eval.csv", "train.csv") for r in _rows(run_dir / name)]
    steps = [s for s in steps if s is not None]
    return int(max(steps)) if steps else None


def update_rate(run_dir: Path) -> dict[str, float] | None:
    """Rates read off train.csv: updates/s between its first and last rows with updates (env stepping and
    evaluations included), and env steps/s over the whole run. None without two such rows."""
    rows = [(_number(r.get("env_step")), _number(r.get("updates")), _number(r.get("wall_hours")))
            for r in _rows(run_dir / "train.csv")]  # fmt: skip
    rows = [r for r in rows if None not in r]
    updating = [r for r in rows if r[1] > 0]
    if len(updating) < 2 or updating[-1][2] <= updating[0][2]:
        return None
    (_, u0, w0), (step, u1, w1) = updating[0], updating[-1]
    return {"updates_per_s": (u1 - u0) / ((w1 - w0) * 3600), "env_steps_per_s": step / (w1 * 3600)}


def _signal_group(job: Job, sig: int) -> None:
    try:
        os.killpg(job.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _gpu_sample() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=utilization.gpu,memory.used,memory.total,power.draw"
    try:
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def run_jobs(jobs: list[Job], *, python: str, device: str, grid_dir: Path, deadline: float, parallel: int,
             threads: int, video: bool, grace_s: float, log) -> None:  # fmt: skip
    """Start the jobs (at most ``parallel`` at once) and wait for them, stopping all at ``deadline`` (a
    time.time()). Fills each job's process fields."""
    grid_dir.mkdir(parents=True, exist_ok=True)
    queue, running = list(jobs), []
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src") + (os.pathsep + path if path else "")}
    next_sample = time.time()
    while queue or running:
        now = time.time()
        while queue and len(running) < parallel and now < deadline:
            job = queue.pop(0)
            job.stdout_path = grid_dir / f"{job.name}.stdout.log"
            cmd = train_command(python, job, device=device, threads=threads, video=video, run_dir=grid_dir / job.name)
            log(f"start {job.name}: {' '.join(cmd[1:])}")
            with job.stdout_path.open("wb") as out:
                job.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                               start_new_session=True)  # fmt: skip
            job.started = time.time()
            running.append(job)
        if now >= next_sample:
            sample = _gpu_sample()
            if sample:
                log(f"gpu (utilisation, memory used/total, power): {sample}; {len(running)} jobs running")
            next_sample = now + GPU_SAMPLE_EVERY_S
        for job in list(running):
            if job.process.poll() is not None:
                job.ended, job.exit_code = time.time(), job.process.returncode
                running.remove(job)
                log(f"end   {job.name}: exit {job.exit_code} after {job.ended - job.started:.0f} s")
        if now >= deadline and running:
            log(f"deadline: stopping {[j.name for j in running]}")
            for job in running:
                job.killed_at_deadline = True
                _signal_group(job, signal.SIGTERM)
            stop = time.time() + grace_s
            while time.time() < stop and any(j.process.poll() is None for j in running):
                time.sleep(0.2)
            for job in running:
                if job.process.poll() is None:
                    _signal_group(job, signal.SIGKILL)
                job.exit_code = job.process.wait()
                job.ended = time.time()
                log(f"end   {job.name}: exit {job.exit_code} (stopped at the deadline)")
            running = []
        if queue and time.time() >= deadline:
            for job in queue:
                log(f"skip  {job.name}: deadline reached before it could start")
            queue = []
        time.sleep(0.2)


def status(job: Job, grid_dir: Path) -> dict:
    """The job's gpu_status.json."""
    run_dir = grid_dir / job.name
    record = {
        "name": job.name,
        "exit_code": job.exit_code,
        "finished": job.exit_code == 0,
        "last_env_step": last_env_step(run_dir),
        "wall_s": None if job.started is None else round(job.ended - job.started, 1),
        "started": job.started is not None,
        "stopped_at_deadline": job.killed_at_deadline,
    }
    rate = update_rate(run_dir)
    if rate:
        record.update({k: round(v, 3) for k, v in rate.items()})
    return record


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def pack(jobs: list[Job], grid_dir: Path, tar_path: Path, media: bool = True) -> None:
    """Write ``tar_path`` with each job's logs, its last IMM figure and video (``media``), output and status."""
    with tarfile.open(tar_path, "w:gz") as tar:
        for job in jobs:
            run_dir = grid_dir / job.name
            for name in LOGS:
                if (run_dir / name).is_file():
                    tar.add(run_dir / name, f"{job.name}/{name}")
            if media:
                for sub, pattern in (("figures", "imm_example_*.png"), ("videos", "*.mp4")):
                    found = sorted((run_dir / sub).glob(pattern))
                    if found:
                        tar.add(found[-1], f"{job.name}/{sub}/{found[-1].name}")
            if job.stdout_path is not None and job.stdout_path.is_file():
                tar.add(job.stdout_path, f"{job.name}/stdout.log")
            _add_bytes(tar, f"{job.name}/gpu_status.json", json.dumps(status(job, grid_dir), indent=1).encode())


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return "  (no output)"
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join("  | " + ln for ln in text[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run kprl train jobs side by side until a deadline; pack their logs.")
    parser.add_argument("--jobs", type=Path, required=True, help="JSON-lines file of {name, argv}")
    parser.add_argument("--out", type=Path, required=True, help="where runs.tar.gz and gpu_run.log go")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="seconds after --started-at to stop all jobs")
    parser.add_argument("--started-at", type=float, default=None, help="epoch seconds the deadline counts from (now)")
    parser.add_argument("--grid-dir", type=Path, default=Path("/tmp/grid"), help="run dirs (checkpoints stay here)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--parallel", type=int, default=None, help="jobs at once (default: all, up to the cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--video", choices=("True", "False"), default="False")
    parser.add_argument("--grace-s", type=float, default=10.0, help="SIGTERM to SIGKILL at the deadline")
    args = parser.parse_args(argv)

    started_at = time.time() if args.started_at is None else args.started_at
    deadline = started_at + args.deadline_s
    try:
        jobs = load_jobs(args.jobs)
    except (OSError, ValueError) as exc:
        print(f"launch.py: {exc}", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    parallel = args.parallel or min(len(jobs), cpus)
    threads = args.threads or threads_per_job(len(jobs), parallel, cpus)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "gpu_run.log"

    def log(message: str) -> None:
        line = f"[{time.time() - started_at:6.1f} s] {message}"
        print(line, flush=True)
        with log_path.open("a") as f:
            f.write(line + "\n")

    log(f"{len(jobs)} jobs, {parallel} at once, {threads} threads each, device {args.device}, "
        f"deadline {args.deadline_s:.0f} s, {cpus} cores")  # fmt: skip
    run_jobs(jobs, python=args.python, device=args.device, grid_dir=args.grid_dir, deadline=deadline,
             parallel=parallel, threads=threads, video=args.video == "True", grace_s=args.grace_s, log=log)  # fmt: skip

    tar_path = args.out / "runs.tar.gz"
    pack(jobs, args.grid_dir, tar_path)
    if tar_path.stat().st_size > TAR_LIMIT_BYTES:
        log(f"runs.tar.gz is {tar_path.stat().st_size / 2**20:.1f} MiB: packed again without figures and videos")
        pack(jobs, args.grid_dir, tar_path, media=False)
    for job in jobs:
        log(f"status {json.dumps(status(job, args.grid_dir))}")
    with log_path.open("a") as f:
        for job in jobs:
            f.write(f"\noutput of {job.name} (last lines):\n{_tail(job.stdout_path)}\n")
    log(f"runs.tar.gz {tar_path.stat().st_size / 2**20:.2f} MiB; "
        f"{sum(j.exit_code == 0 for j in jobs)}/{len(jobs)} jobs finished")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
