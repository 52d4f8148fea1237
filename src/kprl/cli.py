"""The ``kprl`` command: thin subcommands that parse a config and call a library function.

``kprl train`` (train or resume a run), ``eval`` (re-evaluate a saved agent), ``plot`` (a run's curves), ``report``
(aggregate runs), ``sweep`` / ``tune`` (many runs on Ray Tune), ``collect`` (render a frame dataset), ``imm``
(standalone keypoints), ``keypoints`` (detect keypoints in frames), ``doctor`` (check rendering and torch),
``grid`` (an experiment grid as a queue). One table (:data:`COMMANDS`) drives dispatch and usage; each command's
function imports what it needs when it runs, so ``kprl --help`` starts fast. Problems the user can fix end in a one-line ``kprl: error: ...`` and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import tyro

from kprl.cli_args import parse
from kprl.config import PUBLISHED_CURVES
from kprl.errors import KprlError

if TYPE_CHECKING:
    from kprl.config import TrainConfig
    from kprl.grid.jobs import GridHome
    from kprl.grid.spec import Grid


@dataclass
class EvalArgs:
    """Re-evaluate a trained agent from its run directory or a checkpoint."""

    run_dir: Path | None = None
    """Run directory of `kprl train` (its config and newest checkpoint are used)."""
    checkpoint: Path | None = None
    """A checkpoint directory or its state.pt (its run dir's config.json is used)."""
    episodes: int = 10
    """Evaluation episodes."""
    video: Path | None = None
    """Write the first episode as an mp4 here."""
    video_size: int = 256
    """Side in pixels of the video."""
    device: str = "cpu"
    """Torch device."""
    seed: int = 0
    """Seed of the evaluation episodes (training evaluates with run seed + 100000 + env step)."""
    imm_figure: Path | None = None
    """Write the IMM example figure of the first episode here (.png; sac_ae_imm and sac_imm only)."""


@dataclass
class PlotArgs:
    """Draw the learning curve of a run from its CSV logs."""

    run_dir: Path
    """Run directory of `kprl train`."""
    out: Path | None = None
    """Output image (default RUN_DIR/curves.png)."""


@dataclass
class ReportArgs:
    """Aggregate training runs: tidy CSV of every evaluation, final-score table (mean ± std, IQM with bootstrap CI,
    keypoint collapse diagnostics, unfinished runs), the conditions' short names, learning curves beside published
    ones, performance profiles, IMM loss during RL vs standalone, keypoint figures, and differences between
    conditions (--compare). Prints the table's env step, how many runs reached it, a warning per run that did not,
    then the files written."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories of `kprl train`, or folders holding them (searched recursively)."""
    out: Path = Path("results/report")
    """Directory to write the report into (files in it are replaced)."""
    at: int | None = None
    """Env step of the final-score table, the performance profiles and the differences; None: the largest step
    every finished run has evaluated at. Only the runs evaluated there count."""
    reference_results: Path | None = PUBLISHED_CURVES
    """Folder of published per-seed curves (CSV) to draw beside ours (default: the DrQ and DrQ-v2 curves shipped
    with kprl); None or a missing folder: none."""
    imm_run: Path | None = None
    """A `kprl imm train` run whose train/validation loss is drawn beside the keypoint agents' IMM loss."""
    compare: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """TREATMENT:CONTROL, two labels of the report's agent column; repeat for more pairs. Writes differences.csv/.md:
    difference of mean final returns and probability of improvement, each with a 95 % bootstrap CI."""


@dataclass
class GridArgs:
    """Where a grid lives: its file (experiments/cartpole_100k.toml) and the grid home for run directories."""

    grid: tyro.conf.Positional[Path]
    """The grid file (TOML: rows, seeds, order, results folder; docs/grid.md)."""
    home: Path | None = None
    """Grid home: run directories (with checkpoints and replay, ~2 GB per 100k run), launch records and pinned code;
    None: $KPRL_GRID_HOME, else ~/kprl-grid."""


@dataclass
class GridRunArgs(GridArgs):
    """Start, in the background, the grid jobs that fit the hours this machine has left: interrupted ones resume
    with the code they started with; new ones run from a pinned copy of the code now installed."""

    hours: float = 2.5
    """Hours this machine has left: only jobs estimated to finish within them are started."""
    fill: bool = False
    """When nothing fits, start the next jobs anyway (harvested unfinished; they resume where the grid home
    survives)."""
    repin: bool = False
    """Resume interrupted jobs with the code installed now and the grid file's current options, instead of the
    code and command they started with. Only for a change that does not alter what a run computes (checkpointing,
    logging, speed): a job whose method options in the grid file differ from its run's is not resumed, and
    runtime.jsonl records each start's commit."""
    only: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Choose only among these jobs (names as `kprl grid status` prints them), e.g. to finish one interrupted run
    before the queue's next; repeatable. Default: every job, in the grid's order."""


@dataclass
class GridHarvestArgs(GridArgs):
    """Copy every run's logs (finished or not) into the grid's results folder and regenerate its report."""

    sources: tyro.conf.UseAppendAction[tuple[Path, ...]] = ()
    """More folders or .tar.gz archives of run directories named after jobs (the GPU script's runs.tar.gz);
    repeatable."""
    report: bool = True
    """Regenerate the report (kprl report) of the harvested runs."""


@dataclass
class GridExportArgs(GridArgs):
    """Print the next jobs that are neither done nor running here as JSON lines, for the GPU script
    (experiments/gpu/run_grid.sh); bring its runs back with `kprl grid harvest --sources`."""

    count: int = 8
    """How many jobs."""


@dataclass
class SweepArgs:
    """Train every (agent, task, seed) as a Ray Tune trial (locally or on a Ray cluster), then report them all.
    Options of the runs themselves: --config FILE and/or `kprl train` options after `--`. Rerun to resume."""

    out: Path
    """Sweep directory: run dirs in OUT/runs, the report in OUT/report, Ray's state in OUT/ray (shared storage on
    a cluster)."""
    agents: str = "sac_ae"
    """Comma-separated agents (sac_ae,sac_ae_imm,sac_imm)."""
    tasks: str = "cartpole_swingup"
    """Comma-separated dm_control tasks."""
    seeds: str = "1-3"
    """Seeds: a range 1-5, a list 1,3,7, or both 1-3,10."""
    env_steps: int = 100_000
    """Environment steps per run."""
    address: str | None = None
    """None: a local Ray instance sized to this machine; auto: the cluster of `ray start`; ray://HOST:PORT: Ray
    Client."""
    cpus_per_run: float = 2.0
    """CPU cores per trial (its torch threads unless the run options set --threads)."""
    gpus_per_run: float = 0.0
    """GPUs per trial (0.5: two trials share one); > 0 trains on cuda."""
    max_concurrent: int | None = None
    """At most this many trials at once; None: as many as the cores and GPUs hold."""
    reference_results: Path | None = PUBLISHED_CURVES
    """Published per-seed curves drawn beside the report's curves (default: the DrQ and DrQ-v2 curves shipped
    with kprl); None or a missing folder: none."""


@dataclass
class TuneArgs:
    """Hyperparameter search on Ray Tune with ASHA early stopping on evaluation return; saves the best configuration
    as a file for `kprl train --config`. Options of the runs: --config FILE and/or `kprl train` options after `--`."""

    space: Path
    """YAML search space: option name -> list (choice), {choice|grid: [...]}, {uniform|loguniform|randint: [lo, hi]}
    or a fixed value (docs/sweeps.md)."""
    out: Path
    """Search directory: trial run dirs in OUT/runs, OUT/trials.csv, OUT/best_config.json, Ray's state in OUT/ray."""
    agent: str = "sac_imm"
    """Agent to tune."""
    task: str = "cartpole_swingup"
    """dm_control task."""
    samples: int = 8
    """Configurations to sample from the space (each grid point is sampled this many times)."""
    env_steps: int = 100_000
    """Environment steps of a trial that is not stopped early."""
    grace_period: int | None = None
    """Env steps before ASHA may stop a trial; None: a quarter of --env-steps (at least --eval-every)."""
    reduction_factor: float = 3.0
    """ASHA keeps 1/reduction_factor of the trials at each rung."""
    address: str | None = None
    """None: a local Ray instance; auto or ray://HOST:PORT: an existing cluster."""
    cpus_per_run: float = 2.0
    """CPU cores per trial."""
    gpus_per_run: float = 0.0
    """GPUs per trial (fractions share a GPU)."""
    max_concurrent: int | None = None
    """At most this many trials at once; None: as many as the cores and GPUs hold."""


@dataclass
class CollectArgs:
    """Render a frame dataset (frames, actions, rewards, landmarks) for keypoint learning; rerun to resume."""

    out: Path
    """Dataset directory (see docs/dataset.md); rerunning the same command resumes or extends it."""
    env_steps: int
    """Environment steps to collect, including action repeat; whole episodes, so the last one is finished."""
    task: str | None = None
    """dm_control task (``domain_task``); required with --policy random, defaults to the agent's otherwise."""
    policy: str = "random"
    """``random`` (uniform actions) or the run directory of `kprl train` (its agent samples actions)."""
    image_size: int = 100
    """Side in pixels of the stored frames (100 = 84 + crop margin, the agent's render size)."""
    seed: int = 0
    """Seed of the collection; episode e is determined by (seed, e)."""
    episodes_per_shard: int = 10
    """Whole episodes per shard file."""
    action_repeat: int | None = None
    """Physics steps per action; None takes the PlaNet value of the domain (or the agent's)."""
    camera_id: int | None = None
    """Camera to render from; None takes the task's default (or the agent's)."""
    time_limit: float | None = None
    """Episode length in simulated seconds; None keeps the task's (10 s). For quick tests."""
    device: str = "cpu"
    """Torch device of a trained policy."""
    start: Literal["task", "any"] = "task"
    """Where each episode starts: task (the task's own reset; cartpole swingup: the pole hanging) or any (a state
    drawn over every joint's whole range, cart and pole tip in view; pair it with a short --time-limit to cover
    all pole angles). dm_control tasks only."""


@dataclass
class ImmFigureArgs:
    """Draw the IMM figures (example, score maps, Gaussian maps, loss curve) of a `kprl imm train` run."""

    run_dir: Path
    """Run directory of `kprl imm train` (its newest checkpoint is drawn)."""
    data: Path | None = None
    """Dataset to draw validation frames from (default: the run's own)."""
    device: str = "cpu"
    """Torch device."""


@dataclass
class ImmEvalArgs:
    """Landmark regression error (pixels) and reconstruction MSE of a `kprl imm train` run, on held-out episodes."""

    run_dir: Path
    """Run directory of `kprl imm train`."""
    data: Path | None = None
    """Dataset to evaluate on (default: the run's own, with its train/validation split)."""
    ridge: float = 1e-3
    """L2 penalty of the regressor, relative to the number of training frames."""
    pairs: int = 512
    """Held-out frame pairs for the reconstruction MSE."""
    device: str = "cpu"
    """Torch device."""


@dataclass
class KeypointsArgs:
    """Detect keypoints in frames with a trained IMM model; write them as npz (and optionally an overlay video)."""

    checkpoint: Path
    """Run directory of `kprl imm train` or of a keypoint agent (`kprl train --agent sac_ae_imm|sac_imm`), one of
    its checkpoint directories, or a state.pt."""
    frames: Path
    """An .npz with `frames` uint8 [N, H, W, 3], a folder of PNGs, or a video."""
    out: Path
    """Output .npz: `keypoints` float32 [N, K, 2], (x, y) pixels of the input frames, x right, y down."""
    video: Path | None = None
    """Also write the frames with their keypoints drawn as an mp4 here."""
    video_size: int = 256
    """Side in pixels of the overlay video."""
    overwrite: bool = False
    """Replace existing --out / --video files."""
    device: str = "cpu"
    """Torch device."""


@dataclass
class DoctorArgs:
    """Check that rendering and torch work on this machine."""

    task: str = "cartpole_swingup"
    """Task to render one frame of."""
    image_size: int = 84
    """Frame size."""


CONFIG_FLAG_HELP = (
    "  --config FILE          Start from a stored config (a run's config.json, kprl tune's best_config.json);\n"
    "                         options given on the command line override it."
)


def _split_config_flag(args: list[str]) -> tuple[Path | None, list[str]]:
    """Take ``--config FILE`` (or ``--config=FILE``) out of the arguments."""
    rest: list[str] = []
    config: Path | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config":
            if i + 1 >= len(args):
                raise KprlError("--config needs a file")
            config = Path(args[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            config = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return config, rest


def cmd_train(args: list[str]) -> int:
    from kprl import config as C
    from kprl.rl.train import train

    config_file, rest = _split_config_flag(args)
    default = C.load_json(C.TrainConfig, config_file) if config_file is not None else C.TrainConfig()
    try:
        cfg = parse(C.TrainConfig, rest, "kprl train", default=default)
    except SystemExit:  # --help: tyro printed the options; --config is taken out before tyro sees the rest
        print(CONFIG_FLAG_HELP)
        raise
    summary = train(cfg)
    print(json.dumps(summary))
    return 0


def cmd_eval(args: list[str]) -> int:
    from kprl.rl.evaluate import evaluate_saved
    from kprl.runtime.progress import Console

    ea = parse(EvalArgs, args, "kprl eval")
    console = Console(live=sys.stdout.isatty() and sys.stderr.isatty())
    bar = console.task("evaluating", total=ea.episodes)

    def on_episode(index: int, episode_return: float) -> None:
        bar.update(completed=index + 1, info=f"return {episode_return:.1f}")
        if not console.live:
            print(f"episode {index + 1}/{ea.episodes}: return {episode_return:.1f}", file=sys.stderr, flush=True)

    try:
        result = evaluate_saved(
            run_dir=ea.run_dir,
            checkpoint=ea.checkpoint,
            episodes=ea.episodes,
            video=ea.video,
            video_size=ea.video_size,
            device=ea.device,
            seed=ea.seed,
            imm_figure=ea.imm_figure,
            on_episode=on_episode,
        )
    finally:
        console.close()
    print(json.dumps(result))
    return 0


def cmd_plot(args: list[str]) -> int:
    from kprl.viz.curves import plot_run

    pa = parse(PlotArgs, args, "kprl plot")
    print(plot_run(pa.run_dir, pa.out))
    return 0


def cmd_report(args: list[str]) -> int:
    from kprl.analysis.report import write_report

    ra = parse(ReportArgs, args, "kprl report")
    summary = write_report(list(ra.runs), ra.out, ra.at, ra.reference_results, ra.imm_run, compare=ra.compare)
    for line in summary["notes"] + summary["written"]:  # the table's step and the runs short of it, then the files
        print(line)
    return 0


def _base_config(args: list[str], prog: str) -> tuple[list[str], TrainConfig]:
    """Split ``args`` at ``--``: the command's own options before, `kprl train` options (and --config FILE) after,
    parsed into the base :class:`TrainConfig` of every trial."""
    from kprl import config as C

    own, train_args = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
    config_file, own = _split_config_flag(own)
    config_after, train_args = _split_config_flag(train_args)
    config_file = config_after or config_file
    default = C.load_json(C.TrainConfig, config_file) if config_file is not None else C.TrainConfig()
    base = parse(C.TrainConfig, train_args, f"{prog} -- [kprl train options]", default=default)
    return own, base


def _finish(summary: dict) -> int:
    print(json.dumps(summary))
    for line in summary.get("failed", []):
        print(f"kprl: error: trial {line}", file=sys.stderr)
    return 1 if summary.get("failed") else 0


def cmd_sweep(args: list[str]) -> int:
    from kprl.analysis.sweep import Resources, parse_names, parse_seeds, sweep

    own, base = _base_config(args, "kprl sweep")
    sa = parse(SweepArgs, own, "kprl sweep")
    summary = sweep(
        agents=parse_names(sa.agents, "--agents"),
        tasks=parse_names(sa.tasks, "--tasks"),
        seeds=parse_seeds(sa.seeds),
        env_steps=sa.env_steps,
        out=sa.out,
        base=base,
        resources=Resources(sa.address, sa.cpus_per_run, sa.gpus_per_run, sa.max_concurrent),
        reference_results=sa.reference_results,
    )
    return _finish(summary)


def cmd_tune(args: list[str]) -> int:
    from kprl.analysis.sweep import Resources, hyperparameter_search

    own, base = _base_config(args, "kprl tune")
    ta = parse(TuneArgs, own, "kprl tune")
    summary = hyperparameter_search(
        agent=ta.agent,
        task=ta.task,
        space_file=ta.space,
        samples=ta.samples,
        env_steps=ta.env_steps,
        out=ta.out,
        base=base,
        resources=Resources(ta.address, ta.cpus_per_run, ta.gpus_per_run, ta.max_concurrent),
        grace_period=ta.grace_period,
        reduction_factor=ta.reduction_factor,
    )
    print(f"best configuration: {summary['best_config']}  (kprl train --config {summary['best_config']} --run-dir ...)")
    return _finish(summary)


def cmd_collect(args: list[str]) -> int:
    from kprl.data.collect import collect

    ca = parse(CollectArgs, args, "kprl collect")
    summary = collect(
        out=ca.out,
        env_steps=ca.env_steps,
        task=ca.task,
        policy=ca.policy,
        image_size=ca.image_size,
        seed=ca.seed,
        episodes_per_shard=ca.episodes_per_shard,
        action_repeat=ca.action_repeat,
        camera_id=ca.camera_id,
        time_limit=ca.time_limit,
        device=ca.device,
        start=ca.start,
    )
    print(json.dumps(summary))
    return 0


def _grid_args(kind: type[GridArgs], args: list[str], prog: str) -> tuple[GridArgs, Grid, GridHome]:
    """Parse a grid subcommand's options; load its grid file and home."""
    from kprl.grid.jobs import GridHome, default_home
    from kprl.grid.spec import load_grid

    ga = parse(kind, args, prog)
    grid = load_grid(ga.grid)
    return ga, grid, GridHome(ga.home or default_home(), grid.name)


def _print_lines(lines: list[str]) -> int:
    print("\n".join(lines))
    return 0


def cmd_grid_status(args: list[str]) -> int:
    from kprl.grid import commands as grid_commands

    _, grid, home = _grid_args(GridArgs, args, "kprl grid status")
    return _print_lines(grid_commands.status_lines(grid, home))


def cmd_grid_run(args: list[str]) -> int:
    from kprl.grid import commands as grid_commands

    ga, grid, home = _grid_args(GridRunArgs, args, "kprl grid run")
    assert isinstance(ga, GridRunArgs)
    return _print_lines(grid_commands.run_what_fits(grid, home, ga.hours, ga.fill, repin=ga.repin, only=ga.only))


def cmd_grid_harvest(args: list[str]) -> int:
    from kprl.grid import commands as grid_commands

    ga, grid, home = _grid_args(GridHarvestArgs, args, "kprl grid harvest")
    assert isinstance(ga, GridHarvestArgs)
    return _print_lines(grid_commands.harvest_lines(grid, home, ga.sources, ga.report))


def cmd_grid_export(args: list[str]) -> int:
    from kprl.grid import commands as grid_commands

    ga, grid, home = _grid_args(GridExportArgs, args, "kprl grid export")
    assert isinstance(ga, GridExportArgs)
    return _print_lines(grid_commands.export_jobs(grid, home, ga.count))


def cmd_imm_train(args: list[str]) -> int:
    from kprl import config as C
    from kprl.imm.train import train_imm

    config_file, rest = _split_config_flag(args)
    default = C.load_json(C.IMMTrainConfig, config_file) if config_file is not None else C.IMMTrainConfig()
    cfg = parse(C.IMMTrainConfig, rest, "kprl imm train", default=default)
    print(json.dumps(train_imm(cfg)))
    return 0


def cmd_imm_figure(args: list[str]) -> int:
    from kprl.viz.imm import figures_from_run

    fa = parse(ImmFigureArgs, args, "kprl imm figure")
    for path in figures_from_run(fa.run_dir, fa.data, fa.device):
        print(path)
    return 0


def cmd_imm_eval(args: list[str]) -> int:
    from kprl.imm.eval import evaluate_imm

    ia = parse(ImmEvalArgs, args, "kprl imm eval")
    print(json.dumps(evaluate_imm(ia.run_dir, ia.data, ia.device, ia.ridge, ia.pairs)))
    return 0


def cmd_keypoints(args: list[str]) -> int:
    from kprl.imm.detect import keypoints_command

    ka = parse(KeypointsArgs, args, "kprl keypoints")
    summary = keypoints_command(
        checkpoint=ka.checkpoint,
        frames=ka.frames,
        out=ka.out,
        video=ka.video,
        device=ka.device,
        overwrite=ka.overwrite,
        video_size=ka.video_size,
    )
    print(json.dumps(summary))
    return 0


def cmd_doctor(args: list[str]) -> int:
    from kprl.runtime.doctor import doctor

    da = parse(DoctorArgs, args, "kprl doctor")
    report = doctor(da.task, da.image_size)
    for key, value in report.items():
        print(f"{key:>16}: {value}")
    return 0 if report.get("render") == "ok" else 1


@dataclass(frozen=True)
class Command:
    """One (sub)command: its name, the function that runs it on its arguments, and its line of help."""

    name: str
    run: Callable[[list[str]], int]
    help: str


def _dispatch(prog: str, commands: Sequence[Command], args: list[str]) -> int:
    """Run the command ``args[0]`` names with the rest of ``args``; usage for no command or --help."""
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(c.name for c in commands)}}} [--help] [options]")
        if prog == "kprl":
            print("       kprl --version")
        print()
        width = max(len(c.name) for c in commands) + 2
        for c in commands:
            lines = c.help.split("\n")
            print(f"  {c.name:<{width}} {lines[0]}" + "".join(f"\n  {'':<{width}} {line}" for line in lines[1:]))
        return 0 if args else 2
    by_name = {c.name: c for c in commands}
    if args[0] not in by_name:
        where = "" if prog == "kprl" else prog.removeprefix("kprl ") + " "
        raise KprlError(f"unknown command '{where}{args[0]}' (choose from {', '.join(by_name)})")
    return by_name[args[0]].run(args[1:])


GRID_COMMANDS = (
    Command("status", cmd_grid_status, "every job of the grid: done, running (env step, machine), interrupted, to do"),
    Command("run", cmd_grid_run, "start in the background what fits the hours left (resumes interrupted jobs first)"),
    Command("harvest", cmd_grid_harvest, "copy runs' logs into results/ (finished or not) and regenerate the report"),
    Command("export", cmd_grid_export, "the next jobs as JSON lines, for a machine that runs them elsewhere (GPU)"),
)
IMM_COMMANDS = (
    Command("train", cmd_imm_train, "train (or resume) IMM keypoints on a frame dataset (kprl collect)"),
    Command("figure", cmd_imm_figure, "draw a run's IMM example, score maps, Gaussian maps and loss curve"),
    Command("eval", cmd_imm_eval, "landmark regression error and reconstruction MSE on held-out episodes"),
)
COMMANDS = (
    Command("train", cmd_train, "train (or resume) an agent on a dm_control task from pixels"),
    Command("eval", cmd_eval, "re-evaluate a saved agent, optionally writing a video"),
    Command("plot", cmd_plot, "draw a run's learning curve (curves.png)"),
    Command("report", cmd_report, "aggregate runs: tidy CSV, final scores (mean, IQM + bootstrap CI), curves, IMM\n"
            "loss, keypoint collapse diagnostics, differences with bootstrap CIs (--compare)"),
    Command("sweep", cmd_sweep, "train agents x tasks x seeds as Ray Tune trials (local or cluster), then report"),
    Command("tune", cmd_tune, "hyperparameter search on Ray Tune with ASHA; saves the best config for train --config"),
    Command("grid", lambda args: _dispatch("kprl grid", GRID_COMMANDS, args),
            "an experiment grid as a resumable queue: status, run what fits, harvest into results/"),
    Command("collect", cmd_collect, "render a frame dataset (frames, actions, landmarks) for keypoint learning"),
    Command("imm", lambda args: _dispatch("kprl imm", IMM_COMMANDS, args),
            "IMM keypoints: train on a dataset, draw figures, evaluate against landmarks"),
    Command("keypoints", cmd_keypoints, "detect keypoints in frames (npz, PNG folder or video) with a trained IMM model"),
    Command("doctor", cmd_doctor, "render one frame and report GL backend, torch and CUDA"),
)
SUBCOMMANDS = tuple(c.name for c in COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kprl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from kprl import __version__

        print(f"kprl {__version__}")
        return 0
    try:
        return _dispatch("kprl", COMMANDS, argv)
    except KprlError as exc:
        print(f"kprl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kprl: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"kprl: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    raise SystemExit(main())
