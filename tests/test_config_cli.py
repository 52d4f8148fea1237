"""Options: validation, JSON round trip, resume compatibility, and the CLI's one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kprl import config as C
from kprl.cli import main
from kprl.cli_args import parse
from kprl.errors import ConfigError


def test_defaults_are_the_reference_hyperparameters() -> None:
    cfg = C.TrainConfig()
    assert (cfg.batch_size, cfg.sac.hidden_dim, cfg.sac.discount) == (128, 1024, 0.99)
    assert (cfg.sac.critic_lr, cfg.sac.critic_beta, cfg.sac.critic_tau, cfg.sac.critic_target_update_every) == (
        1e-3, 0.9, 0.01, 2)  # fmt: skip
    assert (cfg.sac.actor_lr, cfg.sac.actor_beta, cfg.sac.actor_update_every) == (1e-3, 0.9, 2)
    assert (cfg.sac.actor_log_std_min, cfg.sac.actor_log_std_max) == (-10, 2)
    assert (cfg.sac.init_temperature, cfg.sac.alpha_lr, cfg.sac.alpha_beta) == (0.1, 1e-4, 0.5)
    assert (cfg.encoder.num_conv_layers, cfg.encoder.num_filters, cfg.encoder.latent_dim) == (4, 32, 50)
    assert cfg.encoder.encoder_tau == 0.05
    assert (cfg.ae.decoder_lr, cfg.ae.decoder_latent_lambda, cfg.ae.decoder_weight_decay) == (1e-3, 1e-6, 1e-7)
    assert (cfg.env.image_size, cfg.env.frame_stack, cfg.augmentation) == (84, 3, "none")
    assert (cfg.eval_every, cfg.eval_episodes, cfg.seed_steps, cfg.seed_update_burst) == (10_000, 10, None, True)
    assert C.seed_env_steps(cfg, 8) == 8000  # 1000 actions, as pytorch_sac_ae's init_steps
    cfg.seed_steps = 500
    assert C.seed_env_steps(cfg, 8) == 500


def test_json_round_trip_and_differences(tmp_path: Path) -> None:
    cfg = C.TrainConfig(seed=3)
    cfg.sac.actor_lr = 5e-4
    C.save_json(cfg, tmp_path / "c.json")
    back = C.load_json(C.TrainConfig, tmp_path / "c.json")
    assert back == cfg
    other = C.TrainConfig(seed=3, device="cuda", env_steps=5)  # resumable fields only
    other.sac.actor_lr = 5e-4
    assert C.config_differences(C.to_dict(cfg), C.to_dict(other)) == []
    other.batch_size = 64
    assert C.config_differences(C.to_dict(cfg), C.to_dict(other)) == ["batch_size (128 -> 64)"]


def test_unknown_key_in_config_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"sac": {"actor_lrr": 1}}))
    with pytest.raises(ConfigError, match="actor_lrr"):
        C.load_json(C.TrainConfig, tmp_path / "c.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        C.load_json(C.TrainConfig, tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: setattr(c, "batch_size", 0), "--batch-size must be >= 1"),
        (lambda c: setattr(c.env, "frame_stack", 0), "--frame-stack must be >= 1"),
        (lambda c: setattr(c.sac, "actor_lr", 0.0), "--actor-lr must be > 0"),
        (lambda c: setattr(c.sac, "critic_lr", -1.0), "--critic-lr must be > 0"),
        (lambda c: setattr(c, "eval_every", 0), "--eval-every must be >= 1"),
        (lambda c: (setattr(c, "env_steps", 500), setattr(c, "seed_steps", 1000)), "--env-steps .* must exceed"),
        (lambda c: setattr(c.sac, "discount", 1.5), "--discount must be in"),
        (lambda c: setattr(c, "device", "tpu"), "--device must be"),
        (lambda c: setattr(c.keypoint, "keypoints", 0), "--keypoints must be >= 1"),
        (lambda c: setattr(c.keypoint, "sigma", 0.0), "--sigma must be > 0"),
        (lambda c: setattr(c.keypoint, "imm_lr", -1e-3), "--imm-lr must be > 0"),
    ],
)
def test_out_of_range_values_are_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    cfg = C.TrainConfig()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        C.validate(cfg)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--agent", "nope"], "invalid choice 'nope'"),
        (["train", "--bogus", "3"], "Unrecognized options"),
        (["train", "--seed", "x"], "--seed"),
        (["train", "--video", "maybe"], "maybe"),
        (["train", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["train", "--env-steps", "4000"], "must exceed the seed phase (8000 env steps"),
        (["train", "--task", "foo_bar"], "unknown DeepMind Control task 'foo_bar'"),
        (["train", "--device", "cuda:7"], "CUDA"),
        (["train", "--config", "missing.json"], "config file not found"),
        (["eval", "--run-dir", "nowhere"], "no checkpoint"),
        (["frobnicate"], "unknown command"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if "--device" in args and __import__("torch").cuda.is_available():
        pytest.skip("CUDA present")
    code = main([*args, *(["--run-dir", str(tmp_path / "run")] if args[0] == "train" else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("kprl: error:") and needle in err, err
    assert len(err.splitlines()) == 1
    assert not set(err) & {chr(c) for c in range(0x2500, 0x2580)} and "\x1b" not in err and "----" not in err, err
    assert not (tmp_path / "run").exists(), "a rejected command must not create its run dir"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], (False, True, True, False)),
        (["--wandb", "--no-video", "--no-rl-trains-encoder", "--per-frame"], (True, False, False, True)),
        # The spelled-out form of earlier versions, as grid files and scripts wrote it.
        (["--wandb", "True", "--video", "False", "--rl-trains-encoder=false", "--per-frame", "true"],
         (True, False, False, True)),
        (["--video", "False", "--video", "True", "--per-frame=False"], (False, True, True, False)),
    ],
)  # fmt: skip
def test_boolean_options_are_flags_and_the_spelled_out_form_still_parses(
    args: list[str], expected: tuple[bool, ...]
) -> None:
    cfg = parse(C.TrainConfig, args, "kprl train")
    assert (cfg.wandb, cfg.video, cfg.sac.rl_trains_encoder, cfg.keypoint.per_frame) == expected


def test_console_script_help_and_doctor() -> None:
    env = {**os.environ, "MUJOCO_GL": "egl"}
    out = subprocess.run([sys.executable, "-m", "kprl.cli", "train", "--help"], capture_output=True, text=True,
                         env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "--env-steps" in out.stdout and "--task" in out.stdout
    doc = subprocess.run([sys.executable, "-m", "kprl.cli", "doctor"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert "render: ok" in doc.stdout and "MUJOCO_GL: egl" in doc.stdout


@pytest.mark.parametrize("backend", ["bogus", "osmesa"])
def test_unusable_rendering_backend_is_one_line_naming_mujoco_gl(backend: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    if backend == "osmesa" and __import__("ctypes.util").util.find_library("OSMesa"):
        pytest.skip("OSMesa is installed here, so this backend works")
    env = {**__import__("os").environ, "MUJOCO_GL": backend}
    result = subprocess.run([sys.executable, "-m", "kprl.cli", "train", "--run-dir", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err.startswith("kprl: error: dm_control cannot start its renderer with MUJOCO_GL=")
    assert len(err.splitlines()) == 1 and "MUJOCO_GL=egl" in err
    assert not (tmp_path / "run").exists()


def test_version(capsys) -> None:
    from kprl import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"kprl {__version__}\n"


def test_rl_commands_on_a_standalone_imm_run_point_to_the_imm_commands(tmp_path, capsys) -> None:
    run = tmp_path / "imm"
    run.mkdir()
    (run / "config.json").write_text('{"data": "data/cartpole", "run_dir": "runs/imm", "steps": 10}')
    (run / "train.csv").write_text("step,loss\n1,0.5\n")
    assert main(["plot", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"kprl: error: {run} is a `kprl imm train` run, not an RL run: use `kprl imm figure --run-dir {run}`\n"
    assert main(["eval", "--run-dir", str(run)]) == 2
    assert "use `kprl imm eval --run-dir" in capsys.readouterr().err


def test_train_help_shows_the_config_flag_and_usage_comes_from_one_table(capsys) -> None:
    from kprl.cli import COMMANDS, IMM_COMMANDS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--config FILE" in capsys.readouterr().out
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {c.name} " in usage for c in COMMANDS) and usage.startswith("usage: kprl {train,eval,")
    assert main(["imm"]) == 2
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == [c.name for c in IMM_COMMANDS]
