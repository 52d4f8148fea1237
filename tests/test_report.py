"""`kprl report`: tidy CSV, final scores with IQM and bootstrap CI, figures, from real and hand-written run dirs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kprl import config as C
from kprl.cli import main
from kprl.evaluation.stats import iqm
from kprl.report import find_runs, variant_label, write_report
from kprl.train import train

STEPS = (0, 10_000, 20_000)


def fake_run(root: Path, agent: str, seed: int, returns: list[float], **cfg_overrides: object) -> Path:
    """A run directory as `kprl train` leaves it (config.json, eval.csv, train.csv, runtime.jsonl)."""
    run_dir = root / f"{agent}-s{seed}"
    run_dir.mkdir(parents=True)
    cfg = C.TrainConfig(agent=agent, seed=seed, run_dir=run_dir, env_steps=STEPS[-1])  # type: ignore[arg-type]
    for key, value in cfg_overrides.items():
        setattr(cfg, key, value)
    C.save_json(cfg, run_dir / "config.json")
    with open(run_dir / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["env_step", "agent_step", "episode_return", "wall_hours"])
        writer.writeheader()
        for step, ret in zip(STEPS, returns, strict=True):
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
    (run_dir / "runtime.jsonl").write_text(json.dumps({"machine": "test CPU, 2 cores"}) + "\n")
    return run_dir


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, final in enumerate([300.0, 320.0, 280.0, 900.0], start=1):
        fake_run(root, "sac_ae", seed, [0.0, 150.0, final])
    for seed, final in enumerate([700.0, 650.0, 760.0], start=1):
        fake_run(root, "sac_imm", seed, [0.0, 400.0, final], augmentation="crop")
    return root


def test_report_writes_tidy_csv_scores_and_figures(runs: Path, tmp_path: Path) -> None:
    imm_run = tmp_path / "imm"
    imm_run.mkdir()
    (imm_run / "train.csv").write_text("step,loss\n100,0.02\n200,0.01\n")
    (imm_run / "eval.csv").write_text("step,val_loss\n0,0.05\n200,0.012\n")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--imm-run", str(imm_run), "--reference-results", "None"]) == 0

    with open(out / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["agent", "task", "seed", "env_step", "episode_return", "wall_hours", "machine"]
    assert len(rows) == 7 * len(STEPS)
    assert {r["agent"] for r in rows} == {"sac_ae", "sac_imm[augmentation=crop]"}
    assert rows[0]["machine"] == "test CPU, 2 cores"

    with open(out / "final_scores.csv", newline="") as f:
        scores = {r["agent"]: r for r in csv.DictReader(f)}
    ae = scores["sac_ae"]
    assert int(ae["env_step"]) == 20_000 and int(ae["runs"]) == 4
    assert float(ae["mean"]) == pytest.approx(450.0)
    assert float(ae["std"]) == pytest.approx(np.std([300, 320, 280, 900], ddof=1))
    assert float(ae["iqm"]) == pytest.approx(310.0) == pytest.approx(iqm([300, 320, 280, 900]))  # 300, 320
    assert float(ae["iqm_ci_low"]) <= 310.0 <= float(ae["iqm_ci_high"])
    markdown = (out / "final_scores.md").read_text()
    assert "| sac_ae | cartpole_swingup | 4 | 450 ± 300 | 310 [" in markdown
    for name in ("curves_cartpole_swingup.png", "imm_loss.png"):
        assert (out / name).stat().st_size > 10_000


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
    from kprl.report import reference_curves

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
    cfg = C.TrainConfig(agent="sac_imm", run_dir=tmp_path / "runs" / "real", env_steps=96, seed_steps=48,
                        eval_every=48, checkpoint_every=48, eval_episodes=1, batch_size=8, video=False, log_every=8,
                        threads=1)  # fmt: skip
    cfg.env.time_limit = 0.32
    cfg.sac.hidden_dim = 32
    cfg.encoder.num_filters = 8
    cfg.keypoint.keypoints = 2
    train(cfg, quiet=True)
    summary = write_report([tmp_path / "runs"], tmp_path / "report", reference_dir=None)
    assert summary["env_step"] == 96 and summary["scores"][0]["runs"] == 1
    rows = list(csv.DictReader(open(tmp_path / "report" / "evaluations.csv", newline="")))
    steps = [int(r["env_step"]) for r in rows]  # evaluations fall on episode boundaries
    assert steps[0] == 0 and steps[-1] == 96 and len(steps) == 3
    assert rows[0]["machine"] != "unknown"
    assert (tmp_path / "report" / "imm_loss.png").is_file()
    assert list((tmp_path / "report" / "keypoints").glob("sac_imm*_seed1_imm_example_*.png"))
