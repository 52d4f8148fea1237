"""`kprl report`: tidy CSV, final scores with IQM and bootstrap CI, figures, from real and hand-written run dirs."""

from __future__ import annotations

import copy
import csv
import json
import re
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny import tiny_config

import kprl
from kprl import config as C
from kprl.analysis.report import (
    NOT_METHOD,
    UNREAD_OPTIONS,
    final_scores,
    find_runs,
    keypoint_series,
    load_run,
    reference_curves,
    split_by_version,
    variant_label,
    write_report,
)
from kprl.analysis.stats import iqm
from kprl.cli import main
from kprl.errors import ConfigError
from kprl.rl.factory import make_agent
from kprl.rl.replay import Batch
from kprl.rl.train import train
from kprl.runtime.provenance import code_version

STEPS = (0, 10_000, 20_000)


def set_option(cfg: Any, dotted: str, value: object) -> None:
    """Set the option ``dotted`` (``sac.critic_lr``) of a config in place."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, leaf, value)


def fake_run(
    root: Path,
    agent: str,
    seed: int,
    returns: list[float],
    runtime: list[dict[str, object]] | None = None,
    name: str | None = None,
    train_rows: list[dict[str, object]] | None = None,
    **cfg_overrides: object,
) -> Path:
    """A run directory as `kprl train` leaves it (config.json, eval.csv, train.csv, runtime.jsonl); options by
    dotted name with ``__`` for ``.`` (``sac__critic_lr``); ``runtime``: the lines of runtime.jsonl (default: one
    line naming only the machine, as runs from before provenance was recorded). ``returns`` shorter than
    :data:`STEPS`: an unfinished run, evaluated at the first steps only. ``train_rows``: the rows of train.csv."""
    run_dir = root / (name or f"{agent}-s{seed}")
    run_dir.mkdir(parents=True)
    cfg = C.TrainConfig(agent=agent, seed=seed, run_dir=run_dir, env_steps=STEPS[-1])  # type: ignore[arg-type]
    for key, value in cfg_overrides.items():
        set_option(cfg, key.replace("__", "."), value)
    C.save_json(cfg, run_dir / "config.json")
    with open(run_dir / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["env_step", "agent_step", "episode_return", "wall_hours"])
        writer.writeheader()
        for step, ret in zip(STEPS[: len(returns)], returns, strict=True):
            writer.writerow({"env_step": step, "agent_step": step // 8, "episode_return": ret, "wall_hours": step / 1e5})
    with open(run_dir / "train.csv", "w", newline="") as f:
        columns = ["env_step", "updates", "episode_return"] + (["train/imm_loss"] if "imm" in agent else [])
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for i in range(1, 5):
            row = {"env_step": 1000 * i, "updates": 100 * i, "episode_return": 1.0}
            if "imm" in agent:
                row["train/imm_loss"] = 0.01 / i
            writer.writerow(row)
    if train_rows is not None:
        with open(run_dir / "train.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(dict.fromkeys(key for row in train_rows for key in row)))
            writer.writeheader()
            writer.writerows(train_rows)
    lines = runtime if runtime is not None else [{"machine": "test CPU, 2 cores"}]
    (run_dir / "runtime.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, final in enumerate([300.0, 320.0, 280.0, 900.0], start=1):
        fake_run(root, "sac_ae", seed, [0.0, 150.0, final])
    for seed, final in enumerate([700.0, 650.0, 760.0], start=1):
        fake_run(root, "sac_imm", seed, [0.0, 400.0, final], augmentation="crop")
    return root


def test_report_writes_tidy_csv_scores_and_figures(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imm_run = tmp_path / "imm"
    imm_run.mkdir()
    (imm_run / "train.csv").write_text("step,loss\n100,0.02\n200,0.01\n")
    (imm_run / "eval.csv").write_text("step,val_loss\n0,0.05\n200,0.012\n")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--imm-run", str(imm_run), "--reference-results", "None"]) == 0

    with open(out / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["agent", "task", "seed", "env_step", "episode_return", "episodes", "wall_hours",
                             "machine", "kprl_version", "kprl_commit"]  # fmt: skip
    assert len(rows) == 7 * len(STEPS)
    assert {r["agent"] for r in rows} == {"sac_ae", "sac_imm[augmentation=crop]"}
    assert rows[0]["machine"] == "test CPU, 2 cores"
    assert rows[0]["kprl_version"] == rows[0]["kprl_commit"] == "unknown"  # runs that did not record their code

    with open(out / "final_scores.csv", newline="") as f:
        scores = {r["agent"]: r for r in csv.DictReader(f)}
    ae = scores["sac_ae"]
    assert int(ae["env_step"]) == 20_000 and int(ae["runs"]) == 4
    assert float(ae["mean"]) == pytest.approx(450.0)
    assert float(ae["std"]) == pytest.approx(np.std([300, 320, 280, 900], ddof=1))
    assert float(ae["iqm"]) == pytest.approx(310.0) == pytest.approx(iqm([300, 320, 280, 900]))  # 300, 320
    assert float(ae["iqm_ci_low"]) <= 310.0 <= float(ae["iqm_ci_high"])
    assert (ae["condition"], ae["eval_episodes"]) == ("C1 sac_ae", "10")
    markdown = (out / "final_scores.md").read_text()
    assert "| C1 sac_ae | sac_ae | cartpole_swingup | 4 | 450 ± 300 | 310 [" in markdown
    assert "(mean of 10 deterministic episodes per evaluation;" in markdown and "Left out" not in markdown
    for name in ("curves_cartpole_swingup.png", "imm_loss.png", "performance_profile_cartpole_swingup.png"):
        assert (out / name).stat().st_size > 10_000
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "scores at env step 20,000 (7 of 7 runs reached it)"
    assert str(out / "final_scores.md") in printed
    assert not any(line.startswith("warning") for line in printed)


def test_scores_at_a_chosen_step_and_published_numbers_at_100k(runs: Path, tmp_path: Path) -> None:
    summary = write_report([runs], tmp_path / "r", at=10_000, reference_dir=None)
    assert summary["env_step"] == 10_000
    assert {s["agent"]: s["mean"] for s in summary["scores"]} == {"sac_ae": 150.0, "sac_imm[augmentation=crop]": 400.0}
    root = tmp_path / "long"
    fake_run(root, "sac_ae", 1, [0.0, 0.0, 0.0])
    (root / "sac_ae-s1" / "eval.csv").write_text("env_step,episode_return,wall_hours\n100000,312,1.8\n")
    write_report([root], tmp_path / "r100k", reference_dir=None)
    assert "| SAC+AE | 311 ± 11 |" in (tmp_path / "r100k" / "final_scores.md").read_text()


def test_published_reference_curves_are_drawn_when_given(runs: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    lines = ["step,episode,episode_reward,env,seed,agent"]
    lines += [f"{s},{s // 1000},{s / 100 + seed},cartpole_swingup,{seed},DrQ" for seed in (1, 2) for s in STEPS]
    (ref / "drq.csv").write_text("\n".join(lines) + "\n")
    from kprl.analysis.report import reference_curves

    curves = reference_curves(ref, "cartpole_swingup")
    steps, y = curves["DrQ"]
    np.testing.assert_array_equal(steps, STEPS)
    assert y.shape == (2, 3)
    assert write_report([runs], tmp_path / "r", reference_dir=ref)["written"]


def test_variant_labels_name_only_method_options() -> None:
    cfg = C.TrainConfig(agent="sac_imm", seed=4, device="cpu", env_steps=5)
    assert variant_label(cfg) == "sac_imm"
    cfg.keypoint.per_frame = True
    cfg.keypoint.imm_lr = 2e-4
    assert variant_label(cfg) == "sac_imm[imm_lr=0.0002,per_frame=True]"
    ae = C.TrainConfig(agent="sac_ae")
    ae.keypoint.keypoints = 8  # not an option of sac_ae: no label
    assert variant_label(ae) == "sac_ae"


def test_bad_report_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("kprl: error:") for line in err)
    assert find_runs([tmp_path]) == []


def test_report_of_a_real_training_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "runs" / "real", agent="sac_imm", env_steps=96, seed_steps=48, eval_every=48,
                      checkpoint_every=48, eval_episodes=1, log_every=8, time_limit=0.32, keypoints=2)  # fmt: skip
    train(cfg, quiet=True)
    summary = write_report([tmp_path / "runs"], tmp_path / "report", reference_dir=None)
    assert summary["env_step"] == 96 and summary["scores"][0]["runs"] == 1
    rows = list(csv.DictReader(open(tmp_path / "report" / "evaluations.csv", newline="")))
    steps = [int(r["env_step"]) for r in rows]  # evaluations fall on episode boundaries
    assert steps[0] == 0 and steps[-1] == 96 and len(steps) == 3
    assert rows[0]["machine"] != "unknown"
    assert (tmp_path / "report" / "imm_loss.png").is_file()
    (example,) = (tmp_path / "report" / "keypoints").glob("sac_imm*_seed1_imm_example_*.png")
    # The run goes on and draws a newer example: a report written again keeps only that one.
    newer = cfg.run_dir / "figures" / "imm_example_00099999.png"
    shutil.copyfile(sorted((cfg.run_dir / "figures").glob("imm_example_*.png"))[-1], newer)
    write_report([tmp_path / "runs"], tmp_path / "report", reference_dir=None)
    kept = sorted(p.name for p in (tmp_path / "report" / "keypoints").iterdir())
    assert kept == [example.name.split("imm_example_")[0] + newer.name]

    (start,) = [json.loads(line) for line in (cfg.run_dir / "runtime.jsonl").read_text().splitlines()]
    assert start["kprl_version"] == kprl.__version__ == rows[0]["kprl_version"]
    head = git_head(Path(kprl.__file__).parent)
    if head is None:
        pytest.skip("kprl does not run from a git checkout here: no commit to compare")
    assert start["git_commit"] == head and re.fullmatch(r"[0-9a-f]{40}", head)
    assert isinstance(start["git_dirty"], bool)
    assert rows[0]["kprl_commit"] == head + ("+dirty" if start["git_dirty"] else "")


def git_head(path: Path) -> str | None:
    """``git rev-parse HEAD`` in ``path``; None without git or outside a checkout."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_report_lists_the_code_of_every_start(tmp_path: Path) -> None:
    """A run restarted under two commits names both, in order, ``+dirty`` where the tree had local changes; a run
    from before provenance was recorded says ``unknown``."""
    old, new = "a" * 40, "b" * 40
    starts = [{"machine": "CPU A", "kprl_version": "0.1.0", "git_commit": old, "git_dirty": False},
              {"machine": "CPU A", "kprl_version": "0.1.0", "git_commit": old, "git_dirty": False},
              {"machine": "GPU B", "kprl_version": "0.2.0", "git_commit": new, "git_dirty": True},
              {"machine": "GPU B", "kprl_version": "0.2.0", "git_commit": None, "git_dirty": None}]  # fmt: skip
    fake_run(tmp_path / "runs", "sac_ae", 1, [0.0, 1.0, 2.0], runtime=starts)
    fake_run(tmp_path / "runs", "sac_ae", 2, [0.0, 1.0, 2.0])
    write_report([tmp_path / "runs"], tmp_path / "report", reference_dir=None)
    rows = list(csv.DictReader(open(tmp_path / "report" / "evaluations.csv", newline="")))
    by_seed = {r["seed"]: r for r in rows}
    assert by_seed["1"]["machine"] == "CPU A + GPU B"
    assert by_seed["1"]["kprl_version"] == "0.1.0 + 0.2.0"
    assert by_seed["1"]["kprl_commit"] == f"{old} + {new}+dirty + unknown"
    assert (by_seed["2"]["kprl_version"], by_seed["2"]["kprl_commit"]) == ("unknown", "unknown")


def test_code_version_outside_a_checkout_or_without_git_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = {"kprl_version": kprl.__version__, "git_commit": None, "git_dirty": None}
    package = tmp_path / "site-packages" / "kprl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert code_version(package) == unknown
    assert code_version(tmp_path / "missing") == unknown
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert code_version() == unknown


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_of_a_checkout(tmp_path: Path) -> None:
    """The commit of the checkout the package is tracked in; dirty only for changed tracked files. A package that
    git does not track (installed into a virtual environment inside some checkout) has no commit."""

    def git(*args: str) -> str:
        identity = ("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false")
        done = subprocess.run(["git", *identity, *args], cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    package = tmp_path / "src" / "kprl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "README").write_text("a\n")
    git("add", "README")
    git("commit", "-q", "-m", "readme")
    assert code_version(package)["git_commit"] is None  # untracked package
    git("add", "src")
    git("commit", "-q", "-m", "package")
    head = git("rev-parse", "HEAD")
    assert code_version(package) == {"kprl_version": kprl.__version__, "git_commit": head, "git_dirty": False}
    (tmp_path / "scratch.txt").write_text("untracked")
    assert code_version(package)["git_dirty"] is False
    (tmp_path / "README").write_text("b\n")
    assert code_version(package) == {"kprl_version": kprl.__version__, "git_commit": head, "git_dirty": True}


# ------------------------------------------------------------------------------------------------ variant labels
def changed(value: object) -> object:
    """Another value of an option's type (for a label: the value need not be valid for training)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, Path):
        return value / "other"
    assert value is None, f"no rule to change {value!r}"
    return 1


AGENTS: tuple[str, ...] = typing.get_args(C.AgentName)


def test_unread_options_are_options_of_every_agent() -> None:
    assert set(UNREAD_OPTIONS) == set(AGENTS)
    names = set(C.flatten(C.TrainConfig()))
    for agent, unread in UNREAD_OPTIONS.items():
        assert unread <= names, f"{agent}: not options: {sorted(unread - names)}"
    assert NOT_METHOD <= names


@pytest.mark.parametrize("agent", AGENTS)
def test_every_method_option_the_agent_reads_labels_it(agent: str) -> None:
    """Changing any option other than execution and logging options and the agent's unread ones gives a label of
    its own: no two options, and no option and the default, read alike."""
    base = C.TrainConfig(agent=agent)  # type: ignore[arg-type]
    labels = {variant_label(base): "defaults"}
    for name, value in C.flatten(base).items():
        if name == "agent":  # the label's first word
            continue
        cfg = copy.deepcopy(base)
        set_option(cfg, name, changed(value))
        label = variant_label(cfg)
        if name in NOT_METHOD or name in UNREAD_OPTIONS[agent]:
            assert label == agent, name
        else:
            assert label not in labels, f"{name} reads like {labels.get(label)}: {label}"
            labels[label] = name


@pytest.mark.parametrize(
    ("agent", "option", "values"),
    [("sac_ae", "augmentation", ("none", "crop")), ("sac_imm", "augmentation", ("none", "crop")),
     ("sac_imm", "keypoint.imm_lr", (1e-3, 2e-4)), ("sac_ae", "sac.critic_lr", (1e-3, 5e-4)),
     ("sac_ae_imm", "ae.encoder_lr", (1e-3, 5e-4)), ("sac_ae", "ae.encoder_lr", (1e-3, 5e-4))],  # fmt: skip
)
def test_runs_differing_in_one_learning_option_are_not_pooled(
    tmp_path: Path, agent: str, option: str, values: tuple[object, object]
) -> None:
    key = option.replace(".", "__")
    runs = [load_run(fake_run(tmp_path, agent, seed, [0.0, 10.0 * seed, 100.0 * seed], name=f"{value}-s{seed}",
                              **{key: value}))  # fmt: skip
            for value in values for seed in (1, 2)]  # fmt: skip
    assert len({r.label for r in runs}) == 2
    _, scores = final_scores(runs)
    assert [row["runs"] for row in scores] == [2, 2]
    assert len({row["agent"] for row in scores}) == 2


# ------------------------------------------------------------------------- options an agent never reads: verified
SIDE = 32
ACTION_DIM = 2


def small_agent_config(agent: str, update_path: str) -> C.TrainConfig:
    cfg = C.TrainConfig(agent=agent, precision="fp32", update_path=update_path)  # type: ignore[arg-type]
    cfg.env.image_size = SIDE
    cfg.sac.hidden_dim = 32
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    cfg.keypoint.keypoints = 2
    return cfg


def tiny_batch(size: int = 8) -> Batch:
    """Random uint8 stacks of 3 frames; the IMM target (offset 1) is next_obs, as the replay returns it."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (size, 4, 3, SIDE, SIDE), generator=g, dtype=torch.uint8)
    obs, next_obs = frames[:, :3].flatten(1, 2), frames[:, 1:].flatten(1, 2)
    action = torch.rand(size, ACTION_DIM, generator=g) * 2 - 1
    return Batch(obs, action, torch.rand(size, 1, generator=g), torch.ones(size, 1), next_obs, next_obs)


def trained_state(cfg: C.TrainConfig) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Every parameter and buffer of an agent built from seed 0 after two updates (steps 0 and 1, so that update
    schedules count) on one batch, and the updates' metrics."""
    torch.manual_seed(0)
    agent = make_agent(cfg, (9, SIDE, SIDE), ACTION_DIM, "cpu")
    batch = tiny_batch()
    generator = torch.Generator().manual_seed(1)
    metrics = [agent.update(batch, step, generator) for step in (0, 1)]
    state = {f"{name}.{key}": value for name, module in agent.modules().items()
             for key, value in module.state_dict().items()}  # fmt: skip
    state["log_alpha"] = agent.log_alpha.detach()
    return state, metrics


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that are not bitwise equal in both states (or in one state only)."""
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))


@pytest.mark.parametrize("update_path", ["reference", "fast"])
@pytest.mark.parametrize("agent", AGENTS)
def test_options_declared_unread_leave_the_update_bitwise_unchanged(agent: str, update_path: str) -> None:
    """An agent built and updated with every option of ``UNREAD_OPTIONS[agent]`` changed ends with the very
    parameters of one built with the defaults, so leaving those options out of its label pools nothing different.
    A changed learning rate that the agent does read moves them (the comparison can fail)."""
    base = small_agent_config(agent, update_path)
    reference, reference_metrics = trained_state(base)
    perturbed = small_agent_config(agent, update_path)
    for name in sorted(UNREAD_OPTIONS[agent]):
        set_option(perturbed, name, changed(C.flatten(base)[name]))
    state, metrics = trained_state(perturbed)
    moved = differing(reference, state)
    assert not moved, f"{agent} reads an option declared unread: {len(moved)} tensors differ, {moved[:4]} ..."
    assert metrics == reference_metrics
    control = small_agent_config(agent, update_path)
    control.sac.critic_lr *= 2
    assert differing(reference, trained_state(control)[0])


def test_runs_of_different_kprl_versions_are_not_pooled(tmp_path: Path) -> None:
    def start(version: str | None) -> list[dict[str, object]]:
        return [{"machine": "CPU A", **({"kprl_version": version} if version else {})}]

    same = [load_run(fake_run(tmp_path / "same", "sac_ae", s, [0.0, 1.0, 2.0], runtime=start("0.2.0"))) for s in (1, 2)]
    assert split_by_version(same) == same  # one version: labels unchanged
    mixed = split_by_version([
        load_run(fake_run(tmp_path, "sac_ae", 1, [0.0, 1.0, 2.0], runtime=start("0.2.0"))),
        load_run(fake_run(tmp_path, "sac_ae", 2, [0.0, 1.0, 2.0], runtime=start("0.1.0"))),
        load_run(fake_run(tmp_path, "sac_ae", 3, [0.0, 1.0, 2.0], runtime=start(None))),
    ])  # fmt: skip
    assert [r.label for r in mixed] == ["sac_ae (kprl 0.2.0)", "sac_ae (kprl 0.1.0)", "sac_ae (kprl unknown)"]
    _, scores = final_scores(mixed)
    assert [row["runs"] for row in scores] == [1, 1, 1]


def test_published_curves_ship_with_kprl() -> None:
    curves = reference_curves(C.PUBLISHED_CURVES, "cartpole_swingup")
    assert set(curves) == {"DrQ", "DrQ-v2"}
    steps, returns = curves["DrQ"]
    assert returns.shape == (10, len(steps)) and steps[0] == 0


def keypoint_rows(separation: dict[int, float | str], batch_std: float) -> list[dict[str, object]]:
    """train.csv rows of a keypoint agent every 1,000 env steps up to 20,000: separation by env step (a step not
    given: blank, as before the first update), a constant batch std."""
    return [{"env_step": step, "updates": step // 8, "train/keypoint_separation": separation.get(step, ""),
             "train/keypoint_batch_std": batch_std if step in separation else ""}
            for step in range(1000, 20_001, 1000)]  # fmt: skip


def test_keypoint_diagnostics_near_the_final_step(runs: Path, tmp_path: Path) -> None:
    """Separation and batch std: per seed the mean over the train.csv rows in the last 10 % of env steps up to the
    score step (blank rows skipped), then the mean over seeds; blank for an agent without keypoints."""
    one = {step: step / 1e5 for step in range(2000, 20_001, 1000)}
    two = {step: 2 * step / 1e5 for step in range(2000, 20_000, 1000)}  # no value at 20,000
    fake_run(runs, "sac_imm", 1, [0.0, 1.0, 2.0], name="kp1", train_rows=keypoint_rows(one, 0.5))  # type: ignore[arg-type]
    fake_run(runs, "sac_imm", 2, [0.0, 1.0, 2.0], name="kp2", train_rows=keypoint_rows(two, 0.3))  # type: ignore[arg-type]
    out = tmp_path / "report"
    write_report([runs], out, reference_dir=None)

    with open(out / "final_scores.csv", newline="") as f:
        scores = {r["agent"]: r for r in csv.DictReader(f)}
    # window 18,000 .. 20,000: seed 1 mean(0.18, 0.19, 0.20) = 0.19, seed 2 mean(0.36, 0.38) = 0.37
    assert float(scores["sac_imm"]["keypoint_separation"]) == pytest.approx((0.19 + 0.37) / 2)
    assert float(scores["sac_imm"]["keypoint_batch_std"]) == pytest.approx(0.4)
    assert scores["sac_ae"]["keypoint_separation"] == scores["sac_ae"]["keypoint_batch_std"] == ""
    markdown = (out / "final_scores.md").read_text()
    assert "| keypoint separation | keypoint batch std |" in markdown
    assert re.search(r"\| sac_imm \| cartpole_swingup \| 2 \| .* \| 0\.280 \| 0\.400 \|\n", markdown)
    assert re.search(r"\| C\d sac_ae \| sac_ae \| cartpole_swingup \| 4 \| .* \|  \|  \|\n", markdown)
    _, at_10k = final_scores([load_run(runs / "kp1"), load_run(runs / "kp2")], at=10_000)
    assert at_10k[0]["keypoint_separation"] == pytest.approx((0.095 + 0.19) / 2)  # window 9,000 .. 10,000

    assert (out / "keypoints_cartpole_swingup.png").stat().st_size > 10_000
    series = keypoint_series([load_run(runs / "kp1"), load_run(runs / "kp2")], "cartpole_swingup")
    steps, y = series["train/keypoint_separation"]["sac_imm (2 seeds)"]
    np.testing.assert_array_equal(steps, np.arange(2000, 20_001, 1000))
    np.testing.assert_allclose(y[0], steps / 1e5)
    np.testing.assert_allclose(y[1, :-1], 2 * steps[:-1] / 1e5)
    assert np.isnan(y[1, -1])  # seed 2 logged nothing at 20,000: no value there, not a zero


def test_no_keypoint_figure_or_columns_without_keypoint_logs(runs: Path, tmp_path: Path) -> None:
    write_report([runs], tmp_path / "report", reference_dir=None)
    assert not (tmp_path / "report" / "keypoints_cartpole_swingup.png").exists()
    assert "keypoint separation" not in (tmp_path / "report" / "final_scores.md").read_text()


def test_unfinished_runs_count_up_to_where_they_got(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default step is the finished runs' last: an unfinished run is left out there, counted, listed in the
    note with its last evaluation (and how far it trained, from status.json where present) and warned of on the
    command line, and drawn on the curves up to its last evaluation."""
    root = tmp_path / "runs"
    fake_run(root, "sac_ae", 1, [0.0, 100.0, 200.0])
    fake_run(root, "sac_ae", 2, [0.0, 300.0, 400.0])
    fake_run(root, "sac_ae", 3, [0.0, 800.0])
    (root / "sac_ae-s3" / "status.json").write_text(json.dumps({"finished": False, "last_env_step": 14_000}))
    fake_run(root, "sac_imm", 1, [5.0])  # no status.json: unfinished by its eval.csv alone
    import kprl.viz.report

    drawn: dict[str, Any] = {}
    monkeypatch.setattr(kprl.viz.report, "learning_curves_figure", lambda ours, *_: drawn.update(ours) or Path("x"))
    summary = write_report([root], tmp_path / "report", reference_dir=None)

    assert summary["env_step"] == 20_000
    (ae,) = summary["scores"]  # no sac_imm run reached 20,000: no row
    assert (ae["runs"], ae["runs_total"], ae["mean"], ae["seeds"]) == (2, 3, 300.0, "1 2")
    markdown = (tmp_path / "report" / "final_scores.md").read_text()
    assert "| C1 sac_ae | sac_ae | cartpole_swingup | 2 of 3 | 300 ± 141 |" in markdown
    assert ("Left out of the table, without an evaluation at 20,000 env steps: `sac_ae-s3` (sac_ae, seed 3): stops "
            "at 10,000 env steps (unfinished), trained to 14,000 (status.json); `sac_imm-s1` (sac_imm, seed 1): stops "
            "at 0 env steps (unfinished).") in markdown  # fmt: skip
    assert "Unfinished runs in the table" not in markdown
    assert summary["notes"] == ["scores at env step 20,000 (2 of 4 runs reached it)",
                                f"warning: {root / 'sac_ae-s3'} stops at 10,000 env steps (unfinished)",
                                f"warning: {root / 'sac_imm-s1'} stops at 0 env steps (unfinished)"]  # fmt: skip

    steps, mean, low, high = drawn["C1 sac_ae (3 seeds, 1 unfinished)"]
    np.testing.assert_array_equal(steps, STEPS)
    np.testing.assert_allclose(mean, [0.0, 400.0, 300.0])  # 10,000: all three seeds; 20,000: seeds 1 and 2
    assert low[2] >= 200.0 and high[2] <= 400.0  # seed 3's 800 is not in the band past its last evaluation
    np.testing.assert_array_equal(drawn["C2 sac_imm (1 seed, 1 unfinished)"][0], [0])

    _, at_10k = final_scores([load_run(root / f"sac_ae-s{s}") for s in (1, 2, 3)], at=10_000)
    assert (at_10k[0]["runs"], at_10k[0]["mean"]) == (3, 400.0)


def test_the_command_line_says_the_step_and_warns_of_each_run_short_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kprl report` prints the table's step with how many runs reached it, then one warning per run left out: an
    unfinished one, and a finished one not evaluated at a chosen --at; the markdown lists the same runs."""
    root = tmp_path / "runs"
    fake_run(root, "sac_ae", 1, [0.0, 100.0, 200.0])
    fake_run(root, "sac_ae", 2, [0.0, 300.0])
    skipped = fake_run(root, "sac_ae", 3, [0.0, 100.0, 200.0])
    (skipped / "eval.csv").write_text("env_step,episode_return,wall_hours\n0,0,0\n20000,250,0.2\n")  # no 10,000
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reference-results", "None"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == ["scores at env step 20,000 (2 of 3 runs reached it)",
                           f"warning: {root / 'sac_ae-s2'} stops at 10,000 env steps (unfinished)"]  # fmt: skip
    assert printed[2] == str(out / "evaluations.csv")

    assert main(["report", str(root), "--out", str(out), "--reference-results", "None", "--at", "10000"]) == 0
    printed = capsys.readouterr().out.splitlines()
    shortfall = "has no evaluation at 10,000 env steps (last at 20,000; finished: env_steps 20,000)"
    assert printed[:2] == ["scores at env step 10,000 (2 of 3 runs reached it)", f"warning: {skipped} {shortfall}"]
    markdown = (out / "final_scores.md").read_text()
    assert f"without an evaluation at 10,000 env steps: `sac_ae-s3` (sac_ae, seed 3): {shortfall}." in markdown
    assert ("Unfinished runs in the table (evaluated at 10,000 env steps, their eval.csv stops before their "
            "env_steps): `sac_ae-s2` (sac_ae, seed 2): stops at 10,000 env steps (unfinished).") in markdown  # fmt: skip


def test_the_table_says_how_many_episodes_each_return_averages(tmp_path: Path) -> None:
    """The header gives the runs' number of evaluation episodes, from eval.csv's episodes column (as training
    writes it) or, in logs without it, from config.json; where runs differ, the range, and each condition's in an
    episodes column."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(root, "sac_ae", seed, [0.0, 1.0, 2.0], eval_episodes=3)
    write_report([root], tmp_path / "same", reference_dir=None)
    assert "(mean of 3 deterministic episodes per evaluation;" in (tmp_path / "same" / "final_scores.md").read_text()

    column = fake_run(root, "sac_imm", 1, [0.0, 1.0, 2.0], eval_episodes=10)  # the column wins over the config
    rows = (column / "eval.csv").read_text().splitlines()
    (column / "eval.csv").write_text("\n".join([rows[0] + ",episodes"] + [r + ",7.0" for r in rows[1:]]) + "\n")
    summary = write_report([root], tmp_path / "mixed", reference_dir=None)
    assert [(r["agent"], r["eval_episodes"]) for r in summary["scores"]] == [("sac_ae", "3"), ("sac_imm", "7")]
    markdown = (tmp_path / "mixed" / "final_scores.md").read_text()
    assert "(mean of 3 to 7 deterministic episodes per evaluation, the number differing between runs" in markdown
    assert "| condition | agent | task | runs | episodes | mean ± std |" in markdown
    assert "| C2 sac_imm | sac_imm | cartpole_swingup | 1 | 7 | 2 |" in markdown
    tidy = list(csv.DictReader(open(tmp_path / "mixed" / "evaluations.csv", newline="")))
    assert {(r["agent"], r["episodes"]) for r in tidy} == {("sac_ae", "3"), ("sac_imm", "7")}


def test_figures_name_conditions_by_short_names_that_conditions_md_spells_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long variant labels stay out of the figures: every legend names a condition ``C<n> <agent>``, and
    conditions.md / .csv map each short name to its full label, runs and seeds. Legends sit outside every axes and
    inside the figure (nothing covered, nothing cut off)."""
    import kprl.viz.report as viz

    root = tmp_path / "runs"
    long = {"augmentation": "crop", "batch_size": 8, "keypoint__imm_lr": 2e-4, "keypoint__sigma": 0.2}
    keypoints = keypoint_rows(dict.fromkeys(range(1000, 20_001, 1000), 0.5), 0.3)  # type: ignore[arg-type]
    train_rows = [{**row, "train/imm_loss": 0.01} for row in keypoints]
    for seed in (1, 2):
        fake_run(root, "sac_ae", seed, [0.0, 1.0, 2.0])
        fake_run(root, "sac_imm", seed, [0.0, 1.0, 2.0], name=f"imm-s{seed}", train_rows=train_rows, **long)
    fake_run(root, "sac_imm", 3, [0.0, 1.0], name="imm-s3", train_rows=train_rows, **long)
    legends: list[str] = []
    save = viz._save

    def checked_save(fig: Any, out: Path) -> Path:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for legend in fig.legends:
            box = legend.get_window_extent(renderer)
            legends.extend(text.get_text() for text in legend.get_texts())
            assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes), out.name
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, out.name
        assert fig.legends and not any(ax.get_legend() for ax in fig.axes), out.name
        return save(fig, out)

    monkeypatch.setattr(viz, "_save", checked_save)
    summary = write_report([root], tmp_path / "report", reference_dir=None)
    drawn = {Path(p).name for p in summary["written"] if p.endswith(".png")}
    assert drawn == {"curves_cartpole_swingup.png", "performance_profile_cartpole_swingup.png",
                     "keypoints_cartpole_swingup.png", "imm_loss.png"}  # fmt: skip
    label = "sac_imm[augmentation=crop,batch_size=8,imm_lr=0.0002,sigma=0.2]"
    short = "C1 sac_imm crop batch_size=8 imm_l…"  # the options cut to 24 characters; conditions.md has them all
    rl = {f"{short} seed {seed} (during RL)" for seed in (1, 2, 3)}
    assert set(legends) == {f"{short} (3 seeds, 1 unfinished)", "C2 sac_ae (2 seeds)", f"{short} (2 runs)",
                            "C2 sac_ae (2 runs)"} | rl  # fmt: skip
    conditions = (tmp_path / "report" / "conditions.md").read_text()
    assert f"| {short} | {label} | cartpole_swingup | 3 (1 unfinished) | 1 2 3 | `imm-s1`, `imm-s2`, `imm-s3` |" in (
        conditions
    )
    assert "| C2 sac_ae | sac_ae | cartpole_swingup | 2 | 1 2 | `sac_ae-s1`, `sac_ae-s2` |" in conditions
    rows = list(csv.DictReader(open(tmp_path / "report" / "conditions.csv", newline="")))
    assert [(r["condition"], r["agent"], r["runs"], r["unfinished"], r["seeds"]) for r in rows] == [
        (short, label, "3", "1", "1 2 3"), ("C2 sac_ae", "sac_ae", "2", "0", "1 2")]  # fmt: skip


def test_performance_profiles_of_the_final_returns(runs: Path, tmp_path: Path) -> None:
    """performance_profile_<task>.csv: per condition, over its runs at the table's step, the fraction whose return
    exceeds each τ of a grid from 0 to the highest return, with a band around it."""
    write_report([runs], tmp_path / "report", reference_dir=None)
    rows = list(csv.DictReader(open(tmp_path / "report" / "performance_profile_cartpole_swingup.csv", newline="")))
    finals = {"sac_ae": [300.0, 320.0, 280.0, 900.0], "sac_imm[augmentation=crop]": [700.0, 650.0, 760.0]}
    taus = [900.0 * i / 100 for i in range(101)]  # 0 .. the highest final return (900), 101 points
    for agent, scores in finals.items():
        mine = [r for r in rows if r["agent"] == agent]
        assert {(r["task"], int(r["env_step"]), int(r["runs"])) for r in mine} == {
            ("cartpole_swingup", 20_000, len(scores))
        }
        assert [float(r["tau"]) for r in mine] == pytest.approx(taus)
        assert [float(r["fraction"]) for r in mine] == [sum(s > t for s in scores) / len(scores) for t in taus]
        assert all(float(r["ci_low"]) <= float(r["fraction"]) <= float(r["ci_high"]) for r in mine)
    at_450 = {r["condition"]: (float(r["fraction"]), float(r["ci_low"]), float(r["ci_high"]))
              for r in rows if float(r["tau"]) == 450.0}  # fmt: skip
    # Above 450: of sac_ae's runs only 900, so a resample of its 4 runs has k ~ Binomial(4, 1/4) above: P(k = 0) =
    # 0.32 > 2.5 %, P(k <= 2) = 0.95 < 97.5 % <= P(k <= 3) = 0.996: band [0, 3/4]. Every sac_imm run is above.
    assert at_450 == {"C1 sac_ae": (0.25, 0.0, 0.75), "C2 sac_imm crop": (1.0, 1.0, 1.0)}


def two_conditions(root: Path, treatment: list[float], control: list[float]) -> Path:
    """sac_imm[augmentation=crop] runs with final returns ``treatment``, sac_ae runs with ``control``."""
    for seed, final in enumerate(treatment, start=1):
        fake_run(root, "sac_imm", seed, [0.0, 0.0, final], augmentation="crop")
    for seed, final in enumerate(control, start=1):
        fake_run(root, "sac_ae", seed, [0.0, 0.0, final])
    return root


def bootstrap_by_hand(x: list[float], y: list[float], statistic: Any, reps: int) -> tuple[float, float]:
    """The 95 % percentile interval of ``statistic`` over ``reps`` resamples of x and y, drawn in turn from one
    generator seeded 0."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(reps):
        xi = [x[i] for i in rng.integers(0, len(x), len(x))]
        yi = [y[i] for i in rng.integers(0, len(y), len(y))]
        values.append(statistic(xi, yi))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def test_differences_with_bootstrap_cis(tmp_path: Path) -> None:
    treatment, control = [400.0, 600.0, 500.0], [300.0, 400.0]
    root = two_conditions(tmp_path / "runs", treatment, control)
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reference-results", "None",
                 "--compare", "sac_imm[augmentation=crop]:sac_ae", "--compare", "sac_ae:sac_imm[augmentation=crop]"]) == 0  # fmt: skip
    with open(out / "differences.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["treatment"], r["control"]) for r in rows] == [("sac_imm[augmentation=crop]", "sac_ae"),
                                                              ("sac_ae", "sac_imm[augmentation=crop]")]  # fmt: skip
    row = rows[0]
    assert (row["task"], row["env_step"], row["n_treatment"], row["n_control"]) == ("cartpole_swingup", "20000", "3", "2")
    assert float(row["mean_difference"]) == pytest.approx(500.0 - 350.0)
    # Pairs (treatment, control): 400 > 300, 400 = 400 (half), 600 and 500 beat both: 5.5 of 6.
    assert float(row["probability_of_improvement"]) == pytest.approx(5.5 / 6)
    assert float(rows[1]["probability_of_improvement"]) == pytest.approx(0.5 / 6)

    def diff(a: list[float], b: list[float]) -> float:
        return sum(a) / len(a) - sum(b) / len(b)

    def poi(a: list[float], b: list[float]) -> float:
        return sum(1.0 if u > v else 0.5 if u == v else 0.0 for u in a for v in b) / (len(a) * len(b))

    for name, statistic in (("mean_difference", diff), ("probability_of_improvement", poi)):
        low, high = bootstrap_by_hand(treatment, control, statistic, reps=2000)
        assert (float(row[f"{name}_ci_low"]), float(row[f"{name}_ci_high"])) == pytest.approx((low, high))
        assert low < float(row[name]) < high
    assert row["note"] == ""
    markdown = (out / "differences.md").read_text()
    assert "| sac_imm[augmentation=crop] | sac_ae | cartpole_swingup | 3, 2 | +150 [" in markdown
    assert "Agarwal et al. 2021" in markdown


def test_a_difference_with_one_seed_is_marked_preliminary(tmp_path: Path) -> None:
    root = two_conditions(tmp_path / "runs", [700.0], [300.0, 500.0])
    summary = write_report([root], tmp_path / "report", reference_dir=None, compare=["sac_imm[augmentation=crop]:sac_ae"])
    (row,) = summary["differences"]
    assert (row["n_treatment"], row["n_control"], row["note"]) == (1, 2, "one seed: preliminary")
    assert row["mean_difference"] == 300.0 and row["probability_of_improvement"] == 1.0
    assert row["probability_of_improvement_ci_low"] == row["probability_of_improvement_ci_high"] == 1.0
    assert (row["mean_difference_ci_low"], row["mean_difference_ci_high"]) == (200.0, 400.0)
    assert "| 1, 2 | +300 [+200, +400] | 1.00 [1.00, 1.00] | one seed: preliminary |" in (
        tmp_path / "report" / "differences.md"
    ).read_text()


def test_an_unknown_compare_label_is_a_one_line_config_error(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    with pytest.raises(ConfigError, match=r"'sac_imm'.*known labels: sac_ae, sac_imm\[augmentation=crop\]$"):
        write_report([runs], out, reference_dir=None, compare=["sac_imm:sac_ae"])
    assert main(["report", str(runs), "--out", str(out), "--compare", "sac_ae"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("kprl: error: --compare 'sac_ae'") and "known labels: sac_ae, sac_imm[" in line
    assert not out.exists()  # refused before anything is written
