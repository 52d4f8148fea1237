"""The scripts in experiments/gpu/ that take kprl to a GPU machine: packing (the parts that need no network) and the
grid launcher, run here on the CPU with tiny jobs, one of them stopped by the deadline."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from tiny import tiny_args

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "experiments" / "gpu"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pack = _module("pack")
launch = _module("launch")


def fake_wheel(folder: Path, name: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A minimal wheel ``name-1.0-py3-none-any.whl`` holding ``files`` and a RECORD listing them."""
    info = f"{name}-1.0.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
             + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}  # fmt: skip
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
        z.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in files) + f"{info}/RECORD,,\n")
    return path


def test_trim_wheel_drops_what_matches_and_the_rest_installs(tmp_path):
    src = fake_wheel(tmp_path, "fakepkg", {
        "fakepkg/__init__.py": "from fakepkg import keep\n",
        "fakepkg/keep.py": "VALUE = 7\n",
        "fakepkg/keep_test.py": "raise AssertionError\n",
        "fakepkg/assets/big.bin": "x" * 10000,
    })  # fmt: skip
    (tmp_path / "trimmed").mkdir()
    dst = tmp_path / "trimmed" / src.name
    dropped, kept = pack.trim_wheel(src, dst, ("fakepkg/assets/*", "fakepkg/*_test.py"))
    assert (dropped, kept) == (2, 4)  # 2 sources + METADATA + WHEEL kept; RECORD rewritten
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = z.read("fakepkg-1.0.dist-info/RECORD").decode()
    assert "fakepkg/assets/big.bin" not in names and "fakepkg/keep_test.py" not in names
    assert "fakepkg/keep.py" in names and "fakepkg/keep.py,," in record
    assert "big.bin" not in record and "keep_test" not in record

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(dst)], check=True)  # fmt: skip
    assert not (site / "fakepkg" / "assets").exists()
    done = subprocess.run([sys.executable, "-c", "import fakepkg; print(fakepkg.keep.VALUE)"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(site)}, check=True)  # fmt: skip
    assert done.stdout.strip() == "7"


def test_unresolved_lists_requirements_nobody_provides(tmp_path):
    reqs = ("numpy>=1", "labmaze", "foo>=1", "bar; extra == 'dev'", "baz; python_version < '3.10'",
            "qux; python_version >= '3.12'")  # fmt: skip
    wheels = [fake_wheel(tmp_path, "app", {"app/__init__.py": ""}, reqs), fake_wheel(tmp_path, "foo", {})]
    assert pack.unresolved(wheels, "3.12") == {wheels[0].name: {"qux"}}
    assert pack.unresolved(wheels, "3.11") == {}
    assert pack.unresolved(wheels, "3.12", not_needed={}) == {wheels[0].name: {"qux", "labmaze"}}


def test_pins_come_from_pyproject_then_from_what_is_installed(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('dependencies = [\n  "dm_control==1.0.50",\n  "Mujoco==3.17.0",  # note\n  "numpy>=1",\n]\n')
    pins = pack.pinned_versions(("dm-control", "mujoco", "pytest"), pyproject)
    assert pins == {"dm-control": "1.0.50", "mujoco": "3.17.0", "pytest": pytest.__version__}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_tree_bytes_counts_tracked_and_untracked_but_not_ignored_files(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/carry/\n")
    (tmp_path / "tracked.txt").write_bytes(b"a" * 100)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=tmp_path, check=True)
    (tmp_path / "untracked.txt").write_bytes(b"b" * 50)
    (tmp_path / "carry").mkdir()
    (tmp_path / "carry" / "big.whl").write_bytes(b"c" * 5000)
    assert pack.tree_bytes(tmp_path) == 100 + 50 + len("/carry/\n")
    assert pack.folder_bytes(tmp_path / "carry") == 5000


def test_check_size_fails_above_the_limit():
    assert "of 64 MiB" in pack.check_size(6 * 2**20, 30 * 2**20)
    assert "less than 4 MiB to spare" in pack.check_size(30 * 2**20, 31 * 2**20)
    with pytest.raises(SystemExit, match="too large"):
        pack.check_size(10 * 2**20, 55 * 2**20)


# What dm_control reads when kprl's environment is imported and cartpole swingup is loaded, rendered and stepped:
# the audit hook records every file opened, sys.modules every module imported.
_READS = """
import json, sys
opened = set()
sys.addaudithook(lambda event, args: opened.add(str(args[0])) if event == "open" and isinstance(args[0], str) else None)
import numpy as np
import kprl.envs.dmc
import dm_control
from dm_control import suite
env = suite.load("cartpole", "swingup")
env.reset()
env.step(np.zeros(1))
assert env.physics.render(height=32, width=32).std() > 0
files = opened | {m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
print(json.dumps({"root": dm_control.__path__[0], "files": sorted(files)}))
"""


def dm_control_reads() -> set[str]:
    """Wheel-relative paths (dm_control/...) of the files dm_control's cartpole swingup reads here."""
    done = subprocess.run([sys.executable, "-c", _READS], capture_output=True, text=True, check=True,
                          env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    root = Path(found["root"]).resolve()
    reads = set()
    for name in found["files"]:
        path = Path(name).resolve()
        if path.is_relative_to(root) and path.is_file() and "__pycache__" not in path.parts:
            reads.add(str(Path("dm_control") / path.relative_to(root)).replace(os.sep, "/"))
    return reads


def test_trimmed_dm_control_keeps_what_cartpole_reads():
    reads = dm_control_reads()
    assert "dm_control/suite/cartpole.xml" in reads and "dm_control/suite/__init__.py" in reads
    dropped = {p for p in reads if any(pack.fnmatch.fnmatchcase(p, pattern) for pattern in pack.DM_CONTROL_DROP)}
    assert not dropped, f"the trimmed wheel would lack {sorted(dropped)}"

    carried = sorted((REPO / ".gpu_carry" / "wheels").glob("dm_control-*.whl"))
    if carried:  # the packed wheel itself, where experiments/gpu/pack.py has been run
        with zipfile.ZipFile(carried[0]) as z:
            names = set(z.namelist())
        assert reads <= names, sorted(reads - names)
        assert not any(n.startswith("dm_control/locomotion/") for n in names)


def test_load_jobs_checks_each_line(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    good = {"name": "sac_ae-none-s1", "argv": ["--agent", "sac_ae", "--seed", "1"]}
    jobs.write_text(json.dumps(good) + "\n\n# a comment\n")
    [job] = launch.load_jobs(jobs)
    assert (job.name, job.argv) == ("sac_ae-none-s1", ["--agent", "sac_ae", "--seed", "1"])
    for bad, message in [
        ({"name": "a/b", "argv": []}, "name must be"),
        ({"name": "a", "argv": "--seed 1"}, "argv must be"),
        ({"name": "a", "argv": ["--run-dir", "x"]}, "set by the launcher"),
        ({"name": "a", "argv": ["--device=cuda"]}, "set by the launcher"),
        ([1, 2], "expected an object"),
    ]:
        jobs.write_text(json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=message):
            launch.load_jobs(jobs)
    jobs.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="used twice"):
        launch.load_jobs(jobs)


def test_the_launcher_reads_what_kprl_grid_export_writes(tmp_path, capsys):
    from kprl.cli import main
    from kprl.grid.spec import load_grid

    # The shipped grid, with its results folder moved to an empty one: the committed harvest must not decide how
    # many jobs are still to run.
    shipped = GPU.parent / "cartpole_100k.toml"
    text = shipped.read_text()
    assert 'results = "../results/cartpole_100k"' in text and 'imm_run = "../results/' in text
    text = text.replace('results = "../results/cartpole_100k"', f'results = "{tmp_path / "results"}"')
    text = text.replace('imm_run = "../results/', f'imm_run = "{shipped.parent.parent / "results"}/')
    grid = tmp_path / "cartpole_100k.toml"
    grid.write_text(text)
    assert main(["grid", "export", str(grid), "--home", str(tmp_path / "home"), "--count", "9"]) == 0
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(capsys.readouterr().out)
    loaded = launch.load_jobs(jobs)
    expected = {job.name: job.train_args() for job in load_grid(grid).jobs()}
    assert len(loaded) == 9 and all(job.argv == expected[job.name] for job in loaded)


def test_threads_share_the_cores():
    assert launch.threads_per_job(n_jobs=9, parallel=16, cpus=16) == 1
    assert launch.threads_per_job(n_jobs=4, parallel=16, cpus=16) == 4
    assert launch.threads_per_job(n_jobs=3, parallel=2, cpus=16) == 8
    assert launch.threads_per_job(n_jobs=32, parallel=32, cpus=16) == 1


# 40-env-step episodes; evaluation and checkpoint every 120 env steps; a 32 px agent: each job takes seconds.
TINY = tiny_args(without=["env_steps", "threads", "video"], image_size=32, eval_every=120, eval_episodes=1,
                 checkpoint_every=120, video_size=32, keypoints=2)  # fmt: skip
DEADLINE_S = 40


def test_run_grid_on_cpu_packs_every_run_and_stops_at_the_deadline(tmp_path):
    jobs = [
        {"name": "sac_ae_imm-s1", "argv": ["--agent", "sac_ae_imm", "--env-steps", "240", *TINY]},
        {"name": "sac_ae-s1", "argv": ["--agent", "sac_ae", "--env-steps", "240", *TINY]},
        {"name": "too-long", "argv": ["--agent", "sac_ae", "--env-steps", "1000000", *TINY]},
    ]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    out, grid = tmp_path / "out", tmp_path / "grid"
    env = {**os.environ, "OUT": str(out), "KPRL_GPU_DEVICE": "cpu", "KPRL_CARRY_DIR": str(tmp_path / "no_carry"),
           "KPRL_GRID_DIR": str(grid), "PYTHON": sys.executable, "KPRL_GPU_PARALLEL": "3", "KPRL_GPU_VIDEO": "True",
           "KPRL_GPU_GRACE_S": "5", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}  # fmt: skip
    done = subprocess.run([str(GPU / "run_grid.sh"), "run", str(jobs_file), str(DEADLINE_S)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S + 60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu_run.log", "runs.tar.gz"]

    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
        statuses = {j["name"]: json.load(tar.extractfile(f"{j['name']}/gpu_status.json")) for j in jobs}
    for job in jobs:
        name = job["name"]
        for log in ("config.json", "eval.csv", "train.csv", "runtime.jsonl", "stdout.log", "gpu_status.json"):
            assert f"{name}/{log}" in names
        videos = [n for n in names if n.startswith(f"{name}/videos/")]
        assert len(videos) == 1 and videos[0].endswith(".mp4")  # the last one only
    figures = [n for n in names if n.startswith("sac_ae_imm-s1/figures/")]
    assert figures == ["sac_ae_imm-s1/figures/imm_example_00000240.png"]
    assert not any("checkpoint" in n or n.endswith((".pt", ".npz")) for n in names)
    assert not any(n.startswith("sac_ae-s1/figures") for n in names)  # SAC+AE draws no IMM examples

    for name in ("sac_ae_imm-s1", "sac_ae-s1"):
        s = statuses[name]
        assert (s["name"], s["exit_code"], s["finished"], s["last_env_step"]) == (name, 0, True, 240)
        assert 0 < s["wall_s"] < DEADLINE_S and not s["stopped_at_deadline"]
    long = statuses["too-long"]
    assert long["finished"] is False and long["exit_code"] != 0 and long["stopped_at_deadline"]
    assert long["wall_s"] <= DEADLINE_S + 5 + 3
    assert (grid / "too-long" / "checkpoints").is_dir()  # checkpoints stay in the grid dir

    log = (out / "gpu_run.log").read_text()
    assert "deadline: stopping ['too-long']" in log and "2/3 jobs finished" in log
    assert "output of sac_ae-s1" in log and '"final_eval_return"' in log
