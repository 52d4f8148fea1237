"""Many runs on Ray Tune: ``kprl sweep`` (agents x tasks x seeds) and ``kprl tune`` (hyperparameter search).

Every trial is the normal training loop (:func:`kprl.rl.train.train`) writing a normal run directory; Ray only places
trials on the cores and GPUs of one machine or of a cluster, and collects the evaluation returns they report as they
go (ASHA stops poor ``kprl tune`` trials early on them). Layout of ``--out``:

* ``spec.json``: what was asked; rerunning with other settings is refused, rerunning the same command resumes;
* ``runs/<trial>/``: the run directories (config.json, eval.csv, train.csv, checkpoints, videos);
* ``ray/``: Ray Tune's experiment state, which lets a killed driver resume: finished trials are not run again,
  interrupted ones restart and resume from their own checkpoints in ``runs/``;
* ``report/`` (sweep): :func:`kprl.analysis.report.write_report` of the runs; ``trials.csv`` and ``best_config.json``
  (tune): every trial's options and last evaluation, and the best configuration for ``kprl train --config``.

On a cluster ``--out`` must be a path every node sees (a shared filesystem): trials write their run directories
there. Ray is an optional dependency (``pip install 'kprl[sweep]'``); nothing here imports it at module level.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kprl import config as C
from kprl.analysis.report import write_csv, write_report
from kprl.envs.factory import check_task
from kprl.errors import ConfigError, KprlError, first_line
from kprl.rl.train import train
from kprl.runtime.files import atomic_write_text
from kprl.runtime.run_dir import claim_dir
from kprl.viz.curves import read_csv

RAY_MISSING = "this command needs Ray: pip install 'kprl[sweep]' (or pip install 'ray[tune]' pyyaml)"
METRIC = "episode_return"
TIME_ATTR = "env_step"
# Keys of a trial's parameters that are not options of the run.
_BASE, _OUT, _NAMING = "kprl_base_config", "kprl_out", "kprl_naming"


@dataclass
class Resources:
    """Where trials run and what each one gets."""

    address: str | None = None
    """None: start a local Ray instance sized to this machine; ``auto`` or ``ray://HOST:PORT``: an existing cluster."""
    cpus_per_run: float = 2.0
    """CPU cores reserved per trial (also its torch threads, unless the config sets --threads)."""
    gpus_per_run: float = 0.0
    """GPUs per trial (fractions share a GPU); > 0 trains on cuda unless the config names a device."""
    max_concurrent: int | None = None
    """At most this many trials at once; None: as many as the resources hold."""

    def check(self) -> None:
        """A one-line :class:`ConfigError` for impossible resource settings."""
        if not self.cpus_per_run > 0 or not self.gpus_per_run >= 0:
            raise ConfigError("--cpus-per-run must be > 0 and --gpus-per-run >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")


def import_ray() -> Any:
    """The ``ray`` module with Tune loaded, or a :class:`KprlError` saying how to install it."""
    try:
        # Ray is optional (kprl[sweep]): imported only when a sweep runs
        import ray
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise KprlError(RAY_MISSING) from exc
    return ray


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``1-5``, ``1,3,7`` or ``1-3,10`` (ranges inclusive), in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", part)
        if match is None:
            raise ConfigError(f"--seeds must look like 1-5 or 1,3,7, got {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"--seeds range {part.strip()!r} is empty")
        seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    return seeds


def parse_names(text: str, option: str) -> list[str]:
    """A comma-separated list (``sac_ae,sac_imm``) without blanks or repeats."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"{option} needs at least one name")
    return names


def trial_config(params: dict[str, Any]) -> C.TrainConfig:
    """The run configuration of one trial: the base config with the trial's options, in its run directory."""
    options = {k: v for k, v in params.items() if k not in (_BASE, _OUT, _NAMING)}
    cfg = C.with_options(C.from_dict(C.TrainConfig, params[_BASE]), options)
    if params[_NAMING] == "grid":
        name = f"{cfg.agent}-{cfg.env.task}-s{cfg.seed}"
    else:
        # Ray is optional (kprl[sweep]): imported only when a sweep runs
        from ray import tune

        name = f"trial_{tune.get_context().get_trial_id()}"
    cfg.run_dir = Path(params[_OUT]) / "runs" / name
    return cfg


def run_trial(params: dict[str, Any]) -> None:
    """The Ray Tune trainable: train (or resume) one run, reporting every evaluation to Ray.

    A run that was already complete (its trial was interrupted after the last checkpoint) reports its last
    evaluation again, so Ray records a result for it."""
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray import tune


    cfg = trial_config(params)
    reported: list[int] = []

    def report(row: dict[str, Any]) -> None:
        reported.append(int(row["env_step"]))
        tune.report({METRIC: float(row["episode_return"]), TIME_ATTR: int(row["env_step"]), "run_dir": str(cfg.run_dir)})

    train(cfg, quiet=True, on_eval=report)
    if not reported:
        last = read_csv(cfg.run_dir / "eval.csv")[-1]
        report({"env_step": int(last["env_step"]), "episode_return": float(last["episode_return"])})


def check_spec(out: Path, spec: dict[str, Any]) -> bool:
    """Write ``out/spec.json``, or check that an existing one asks for the same; True when it existed."""
    existed = claim_dir(
        out,
        "spec.json",
        spec,
        lambda path: json.loads(path.read_text()),
        clash="holds another sweep ({shown}); use another --out to start a new one",
        empty_needed="exists, is not empty and holds no kprl sweep; use another --out",
    )
    if not existed:
        atomic_write_text(out / "spec.json", json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return existed


def base_dict(base: C.TrainConfig, resources: Resources) -> dict[str, Any]:
    """The base config as a trial receives it: threads and device follow the trial's resources unless set."""
    data = C.to_dict(base)
    if data["threads"] is None:
        data["threads"] = max(1, int(resources.cpus_per_run))
    if resources.gpus_per_run > 0 and data["device"] == "cpu":
        data["device"] = "cuda"
    return data


def start_ray(resources: Resources) -> Any:
    """Connect to the cluster at ``resources.address``, or start a local Ray instance sized to this machine."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        env_vars = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        try:
            ray.init(
                address=resources.address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": env_vars},
                logging_level="ERROR",
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = resources.address or "a local instance"
            raise KprlError(f"cannot start Ray on {where}: {first_line(exc)}") from exc
    return ray


def _progress(print_line: Callable[[str], None]) -> Any:
    """A Tune callback printing one line per reported evaluation and per failed trial."""
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray.tune import Callback

    class Progress(Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            name = Path(str(result.get("run_dir", trial.trial_id))).name
            print_line(f"{name}: env step {result.get(TIME_ATTR)} return {result.get(METRIC, float('nan')):.1f}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print_line(f"trial {trial.trial_id} failed: {trial.error_file or 'see Ray logs'}")

    return Progress()


def fit(
    out: Path,
    param_space: dict[str, Any],
    resources: Resources,
    tune_config: Any,
    resume: bool,
    print_line: Callable[[str], None] = print,
) -> Any:
    """Run (or, when ``resume`` and Ray's state exists, resume) the trials; returns Ray's ResultGrid."""
    ray = start_ray(resources)
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray import tune

    trainable = tune.with_resources(run_trial, {"cpu": resources.cpus_per_run, "gpu": resources.gpus_per_run})
    experiment = (out / "ray").resolve()
    try:
        if resume and tune.Tuner.can_restore(str(experiment)):
            print_line(f"resuming the sweep in {out}: finished trials are kept, interrupted ones resume")
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune_config,
                run_config=tune.RunConfig(
                    name=experiment.name,
                    storage_path=str(experiment.parent),
                    verbose=0,
                    callbacks=[_progress(print_line)],
                ),
            )
        return tuner.fit()
    finally:
        if resources.address is None:
            ray.shutdown()


def _error_line(result: Any) -> str:
    """The last line of a Ray result's error ("" when the trial did not fail)."""
    if result.error is None:
        return ""
    message = str(result.error).strip().splitlines()
    return message[-1] if message else type(result.error).__name__


def trial_errors(results: Any) -> list[str]:
    """One line per failed trial: its run directory (or id) and the last line of its error."""
    return [f"{Path(str((r.metrics or {}).get('run_dir', r.path))).name}: {_error_line(r)}"
            for r in results if r.error is not None]  # fmt: skip


# ----------------------------------------------------------------------------------------------------- sweep


def sweep(
    agents: Sequence[str],
    tasks: Sequence[str],
    seeds: Sequence[int],
    env_steps: int,
    out: Path,
    base: C.TrainConfig,
    resources: Resources,
    reference_results: Path | None = None,
    print_line: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every (agent, task, seed) as one Ray Tune trial, then write the report of all runs.

    Returns a summary: out, trials, failed (one line each), report files."""
    import_ray()
    resources.check()
    out = Path(out)
    cells = [(a, t, s) for a in agents for t in tasks for s in seeds]
    for agent, task, seed in cells:  # bad input fails here, before Ray starts
        check_task(task)
        C.validate(C.with_options(base, {"agent": agent, "env.task": task, "seed": seed, "env_steps": env_steps}))
    base_data = base_dict(base, resources)
    spec = {"command": "sweep", "agents": list(agents), "tasks": list(tasks), "seeds": list(seeds),
            "env_steps": env_steps, "base": C.to_dict(base)}  # fmt: skip
    resume = check_spec(out, spec)
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray import tune

    param_space = {
        _BASE: base_data,
        _OUT: str(out.resolve()),
        _NAMING: "grid",
        "env_steps": env_steps,
        "agent": tune.grid_search(list(agents)),
        "env.task": tune.grid_search(list(tasks)),
        "seed": tune.grid_search(list(seeds)),
    }
    tune_config = tune.TuneConfig(max_concurrent_trials=resources.max_concurrent, reuse_actors=True)
    results = fit(out, param_space, resources, tune_config, resume, print_line)
    failed = trial_errors(results)
    written: list[str] = []
    if (out / "runs").is_dir():
        written = write_report([out / "runs"], out / "report", None, reference_results, None)["written"]
    return {"out": str(out), "trials": len(cells), "failed": failed, "report": [str(p) for p in written]}


# ------------------------------------------------------------------------------------------------------ tune

SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


def load_space(path: Path, base: C.TrainConfig) -> dict[str, tuple[str, list[Any]]]:
    """Read a search space: a YAML mapping of option name to ``{KIND: VALUES}`` (KIND one of choice, grid: a list
    of values; uniform, loguniform: [low, high]; randint: [low, high), high exclusive as in Ray), a bare list
    (choice) or a single value (fixed). Every value and bound is checked against the options (one-line
    :class:`ConfigError`). Returns dotted option name -> (kind, values)."""
    try:
        # PyYAML is optional (kprl[sweep]): imported only when a sweep runs
        import yaml
    except ImportError as exc:
        raise KprlError(RAY_MISSING) from exc
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"search space file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"search space {path} must be a mapping of option names to values or ranges")
    space: dict[str, tuple[str, list[Any]]] = {}
    for name, spec in data.items():
        option = C.option_name(str(name))
        if option in ("run_dir", "seed", "env_steps"):
            raise ConfigError(f"{path}: {option} is set by kprl tune itself, not by the search space")
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
                raise ConfigError(f"{path}: {name} needs exactly one of {', '.join(SPACE_KINDS)}, got {spec!r}")
            kind, values = next(iter(spec.items()))
        elif isinstance(spec, list):
            kind, values = "choice", spec
        else:
            kind, values = "choice", [spec]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: {name} {kind} needs a non-empty list, got {values!r}")
        # Each value (or bound) as the option's type, checked by the same validation as `kprl train`.
        values = [C.flatten(_checked(base, option, v))[option] for v in values]
        if kind in ("uniform", "loguniform", "randint"):
            if len(values) != 2 or not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0):
                raise ConfigError(f"{path}: {name} {kind} needs [low, high] with low < high (and low > 0 for "
                                  f"loguniform), got {values!r}")  # fmt: skip
        space[option] = (kind, [str(v) if isinstance(v, Path) else v for v in values])
    return space


def _checked(base: C.TrainConfig, option: str, value: Any) -> C.TrainConfig:
    cfg = C.with_options(base, {option: value})
    C.validate(cfg)
    return cfg


def tune_space(space: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    """Ray Tune's search-space objects for :func:`load_space` output."""
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray import tune

    makers: dict[str, Callable[[list[Any]], Any]] = {
        "choice": lambda v: tune.choice(v) if len(v) > 1 else v[0],
        "grid": lambda v: tune.grid_search(v),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "randint": lambda v: tune.randint(v[0], v[1]),
    }
    return {name: makers[kind](values) for name, (kind, values) in space.items()}


def hyperparameter_search(
    agent: str,
    task: str,
    space_file: Path,
    samples: int,
    env_steps: int,
    out: Path,
    base: C.TrainConfig,
    resources: Resources,
    grace_period: int | None = None,
    reduction_factor: float = 3.0,
    print_line: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Search the options of ``space_file`` with ASHA (Li et al. 2020) stopping poor trials early on evaluation
    return; writes ``trials.csv`` and the best configuration, ``best_config.json`` (for ``kprl train --config``).

    The best trial is the one with the highest last evaluation return among the trials that trained longest (the
    ones ASHA let finish), so a trial stopped early on a lucky evaluation does not win."""
    import_ray()
    resources.check()
    out = Path(out)
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    check_task(task)
    base = C.with_options(base, {"agent": agent, "env.task": task, "env_steps": env_steps})
    C.validate(base)
    space = load_space(space_file, base)
    grace = grace_period if grace_period is not None else min(env_steps, max(base.eval_every, env_steps // 4))
    if not 0 < grace <= env_steps or reduction_factor <= 1:
        raise ConfigError("--grace-period must be in (0, --env-steps] and --reduction-factor > 1")
    spec = {"command": "tune", "agent": agent, "task": task, "space": {k: list(v) for k, v in space.items()},
            "samples": samples, "env_steps": env_steps, "grace_period": grace, "reduction_factor": reduction_factor,
            "base": C.to_dict(base)}  # fmt: skip
    resume = check_spec(out, spec)
    # Ray is optional (kprl[sweep]): imported only when a sweep runs
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=env_steps, grace_period=grace,
                              reduction_factor=reduction_factor)  # fmt: skip
    tune_config = tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=samples,
                                  max_concurrent_trials=resources.max_concurrent, reuse_actors=True)  # fmt: skip
    param_space = {_BASE: base_dict(base, resources), _OUT: str(out.resolve()), _NAMING: "trial_id",
                   **tune_space(space)}  # fmt: skip
    results = fit(out, param_space, resources, tune_config, resume, print_line)

    rows = []
    for result in results:
        metrics = result.metrics or {}
        options = {k: result.config[k] for k in space}
        rows.append({"run_dir": Path(str(metrics.get("run_dir", ""))).name, **options,
                     TIME_ATTR: metrics.get(TIME_ATTR), METRIC: metrics.get(METRIC),
                     "error": _error_line(result)})  # fmt: skip
    write_csv(out / "trials.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))
    done = [r for r in rows if not r["error"] and r[METRIC] is not None]
    if not done:
        raise KprlError(f"no trial of the search in {out} reported an evaluation; see {out / 'trials.csv'}")
    longest = max(r[TIME_ATTR] for r in done)
    best = max((r for r in done if r[TIME_ATTR] == longest), key=lambda r: r[METRIC])
    best_cfg = C.with_options(base, {k: best[k] for k in space})
    best_cfg.run_dir = Path("runs") / f"tuned-{agent}-{task}"
    C.save_json(best_cfg, out / "best_config.json")
    return {"out": str(out), "trials": len(rows), "failed": trial_errors(results),
            "best": {k: best[k] for k in space}, "best_return": best[METRIC], "best_env_step": best[TIME_ATTR],
            "best_run_dir": best["run_dir"], "best_config": str(out / "best_config.json")}  # fmt: skip
