"""Seeing what a keypoint agent learned: keypoints drawn on eval videos, the agent's IMM example figure, and
`kprl keypoints` on an agent's run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kprl import config as C
from kprl.cli import main
from kprl.envs.factory import make_env
from kprl.errors import ConfigError
from kprl.imm.detect import detect_agent, frame_stacks
from kprl.rl import evaluate as evaluate_module
from kprl.rl.evaluate import (
    evaluate_policy,
    evaluate_saved,
    imm_pair_indices,
    keypoint_video_frame,
    load_agent,
)
from kprl.rl.factory import make_agent
from kprl.rl.sac import SACAgent
from kprl.rl.train import train
from kprl.runtime.checkpoint import save_checkpoint
from kprl.viz.keypoints import PALETTE, view_to_frame

VIDEO_SIZE = 64


def small_config(agent: str, run_dir: Path, **overrides: Any) -> C.TrainConfig:
    """A tiny real run on cartpole (the settings of test_keypoint_agents' end-to-end run), rendering 100 px and
    cropping the 84 px centre, with 4-action episodes."""
    cfg = C.TrainConfig(agent=agent)  # type: ignore[arg-type]
    cfg.sac.hidden_dim = 32
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    cfg.keypoint.keypoints = 4
    cfg.augmentation = "crop"
    cfg.run_dir = run_dir  # type: ignore[assignment]
    cfg.env.time_limit = 0.32  # 4 actions of 8 physics steps per episode
    settings = dict(env_steps=64, seed_steps=32, eval_every=32, checkpoint_every=32, eval_episodes=1, batch_size=8,
                    video=True, video_size=VIDEO_SIZE, log_every=8)  # fmt: skip
    for key, value in {**settings, **overrides}.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def imm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny sac_imm run (video on)."""
    run_dir = tmp_path_factory.mktemp("agent_viz") / "sac_imm"
    train(small_config("sac_imm", run_dir), quiet=True)
    return run_dir


def saved_sac_ae(run_dir: Path) -> Path:
    """A sac_ae checkpoint as `kprl train` writes it (no training)."""
    cfg = small_config("sac_ae", run_dir)
    run_dir.mkdir(parents=True)
    C.save_json(cfg, run_dir / "config.json")
    obs_shape = (9, C.render_size(cfg), C.render_size(cfg))
    agent = make_agent(cfg, obs_shape, 1, "cpu")
    state = {"agent_name": "sac_ae", "agent": agent.state_dict(), "obs_shape": list(obs_shape), "action_dim": 1}
    save_checkpoint(run_dir, 0, state, None)
    return run_dir


# --------------------------------------------------------------------------------------- coordinate mapping


def test_view_to_frame_maps_view_to_video_pixels_exactly() -> None:
    coords = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 1.0]])
    # view pixel p = (c + 1) * 83 / 2 + 0.5; render pixel p + 8; video pixel * 64 / 100.
    want = (np.array([[0.5, 0.5], [83.5, 83.5], [42.0, 42.0], [0.5, 83.5]]) + 8.0) * 0.64
    got = view_to_frame(coords, 84, 100, 64, 64)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # Torch input, non-square target image: x scales with the width, y with the height.
    got = view_to_frame(torch.tensor(coords), 84, 100, 50, 200)
    np.testing.assert_allclose(got, (want / 0.64) * np.array([2.0, 0.5]), rtol=0, atol=1e-4)
    # No crop (view = render): only the scaling.
    np.testing.assert_allclose(view_to_frame(coords, 84, 84, 84, 84), want / 0.64 - 8.0, atol=1e-5)
    with pytest.raises(ValueError):
        view_to_frame(coords, 100, 84, 64, 64)


def test_frame_stacks_repeat_the_first_frame_like_reset() -> None:
    frames = torch.arange(5).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    stacks = frame_stacks(frames, 3, 0, 5)
    assert stacks.shape == (5, 9, 2, 2)
    assert stacks[:, ::3, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert frame_stacks(frames, 3, 3, 5)[:, ::3, 0, 0].tolist() == [[1, 2, 3], [2, 3, 4]]


def test_imm_pairs_are_spread_over_the_episode() -> None:
    source, target = imm_pair_indices(125, 1)
    assert source.tolist() == [0, 41, 83, 124] and target.tolist() == [1, 42, 84, 125]
    source, target = imm_pair_indices(4, 3)
    assert source.tolist() == [0, 1] and target.tolist() == [3, 4]
    source, target = imm_pair_indices(2, 5)  # episode shorter than the offset: the offset shrinks
    assert source.tolist() == [0] and target.tolist() == [2]
    assert len(imm_pair_indices(0, 1)[0]) == 0


# ------------------------------------------------------------------------------------------------ eval video


def capture_video(monkeypatch: pytest.MonkeyPatch, agent: SACAgent, cfg: C.TrainConfig, path: Path) -> list[Any]:
    """Run `evaluate_policy` for one episode and return the video frames it would write (exact, before encoding)."""
    captured: list[Any] = []
    monkeypatch.setattr(evaluate_module, "write_video", lambda p, frames, fps: captured.extend(frames))
    evaluate_policy(agent, cfg, 7, 1, path)
    return captured


def test_video_frames_show_the_keypoints_where_the_view_maps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = small_config("sac_imm", tmp_path / "run")
    torch.manual_seed(0)
    agent = make_agent(cfg, (9, 100, 100), 1, "cpu")
    plain = capture_video(monkeypatch, agent, cfg, tmp_path / "a.mp4")
    with monkeypatch.context() as m:
        calls: list[tuple[int, ...]] = []

        def centre(obs: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(obs.shape))
            return torch.zeros(obs.shape[0], 1, 2)  # the centre of the view: video pixel (32, 32)

        m.setattr(agent, "keypoints", centre)
        drawn = capture_video(m, agent, cfg, tmp_path / "b.mp4")
    with monkeypatch.context() as m:  # the same run without drawing
        m.setattr(evaluate_module, "keypoint_video_frame", lambda agent, obs, frame, render: frame)
        undrawn = capture_video(m, agent, cfg, tmp_path / "c.mp4")
    assert len(drawn) == len(undrawn) == len(plain) == 5 and calls == [(1, 9, 100, 100)] * 5
    for with_kp, without in zip(drawn, undrawn, strict=True):
        assert with_kp.shape == (VIDEO_SIZE, VIDEO_SIZE, 3)
        # A disc of radius 2 around (32, 32) in keypoint 0's colour, a dark rim, the rest untouched.
        for row, col in [(31, 31), (32, 32), (30, 31), (31, 33)]:
            assert with_kp[row, col].tolist() == PALETTE[0].tolist()
        assert with_kp[29, 32].tolist() == [0, 0, 0]  # the rim
        changed = np.argwhere((with_kp != without).any(axis=-1))
        assert len(changed) > 0 and (np.abs(changed - 31.5) <= 3.5).all()
    # The real keypoints are drawn too: a frame differs from the run without drawing.
    assert any((a != b).any() for a, b in zip(plain, undrawn, strict=True))


def test_sac_ae_video_is_not_touched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = small_config("sac_ae", tmp_path / "run")
    agent = make_agent(cfg, (9, 100, 100), 1, "cpu")

    def fail(*args: Any) -> None:
        raise AssertionError("keypoints drawn for an agent without keypoints")

    monkeypatch.setattr(evaluate_module, "keypoint_video_frame", fail)
    frames = capture_video(monkeypatch, agent, cfg, tmp_path / "v.mp4")
    env = make_env(cfg, seed=7)
    try:
        step = env.reset()
        want = [env.render(VIDEO_SIZE)]
        while not step.last:
            agent.train(False)
            step = env.step(agent.act(step.obs, deterministic=True))
            want.append(env.render(VIDEO_SIZE))
    finally:
        env.close()
    assert all(np.array_equal(a, b) for a, b in zip(frames, want, strict=True)) and len(frames) == len(want)


def test_keypoint_video_frame_leaves_the_input_frame_alone() -> None:
    cfg = small_config("sac_imm", Path("unused"))
    agent = make_agent(cfg, (9, 100, 100), 1, "cpu")
    frame = np.full((VIDEO_SIZE, VIDEO_SIZE, 3), 200, np.uint8)
    obs = np.random.default_rng(0).integers(0, 256, (9, 100, 100), dtype=np.uint8)
    drawn = keypoint_video_frame(agent, obs, frame, 100)
    assert (frame == 200).all() and (drawn != 200).any()
    kp = agent.keypoints(torch.as_tensor(obs)[None])
    assert kp is not None and kp.shape == (1, 4, 2)
    x, y = view_to_frame(kp[0], 84, 100, VIDEO_SIZE, VIDEO_SIZE)[-1]  # the last disc is drawn on top
    assert drawn[int(y), int(x)].tolist() == PALETTE[3].tolist()


# ------------------------------------------------------------------------------------------------ the run


def test_run_writes_keypoint_videos_and_imm_figures(imm_run: Path) -> None:
    videos = sorted((imm_run / "videos").glob("eval_*.mp4"))
    figures = sorted((imm_run / "figures").glob("imm_example_*.png"))
    assert [p.name for p in videos] == ["eval_00000000.mp4", "eval_00000032.mp4", "eval_00000064.mp4"]
    assert [p.name for p in figures] == ["imm_example_00000000.png", "imm_example_00000032.png",
                                         "imm_example_00000064.png"]  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in videos + figures)
    assert figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_writes_the_imm_figure(imm_run: Path, tmp_path: Path) -> None:
    result = evaluate_saved(run_dir=imm_run, episodes=1, imm_figure=tmp_path / "f.png", video_size=32)
    assert Path(result["imm_figure"]).is_file()
    sac_ae = saved_sac_ae(tmp_path / "sac_ae")
    with pytest.raises(ConfigError, match="IMM objective"):
        evaluate_saved(run_dir=sac_ae, episodes=1, imm_figure=tmp_path / "g.png")


# ------------------------------------------------------------------------------------------ kprl keypoints


def test_kprl_keypoints_on_an_agent_run(imm_run: Path, tmp_path: Path) -> None:
    agent, cfg, _ = load_agent(run_dir=imm_run)
    env = make_env(cfg, seed=3)
    try:
        steps = [env.reset()]
        while not steps[-1].last:
            steps.append(env.step(np.zeros(1, np.float32)))
    finally:
        env.close()
    frames = np.stack([s.frame.transpose(1, 2, 0) for s in steps])  # [5, 100, 100, 3]
    # Frames at the render size: exactly the agent's keypoints of the env's own observation stacks.
    want = agent.keypoints(torch.as_tensor(np.stack([s.obs for s in steps])))
    assert want is not None
    got = detect_agent(agent, cfg, frames, batch_size=2)
    np.testing.assert_allclose(got, view_to_frame(want, 84, 100, 100, 100), atol=1e-4)

    # Through the CLI, on frames of another (non-square) size.
    small = frames[:, ::2, :, :]  # [5, 50, 100, 3]
    np.savez(tmp_path / "frames.npz", frames=small)
    out = tmp_path / "kp.npz"
    code = main(["keypoints", "--checkpoint", str(imm_run), "--frames", str(tmp_path / "frames.npz"),
                 "--out", str(out), "--video", str(tmp_path / "kp.mp4"), "--video-size", "32"])  # fmt: skip
    assert code == 0 and (tmp_path / "kp.mp4").is_file()
    with np.load(out) as data:
        keypoints = data["keypoints"]
        assert data["image_size"].tolist() == [50, 100] and int(data["model_image_size"]) == 100
        assert int(data["checkpoint_step"]) == 64
    assert keypoints.shape == (5, 4, 2) and keypoints.dtype == np.float32
    assert (keypoints >= 0).all() and (keypoints[..., 0] <= 100).all() and (keypoints[..., 1] <= 50).all()
    # Inside the crop the agent sees: 8 px margin of 100 -> 4 px of 50 rows.
    assert (keypoints[..., 0] >= 8).all() and (keypoints[..., 1] <= 46).all()


def test_kprl_keypoints_on_a_sac_ae_run_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = saved_sac_ae(tmp_path / "sac_ae")
    np.savez(tmp_path / "frames.npz", frames=np.zeros((2, 100, 100, 3), np.uint8))
    code = main(["keypoints", "--checkpoint", str(run_dir), "--frames", str(tmp_path / "frames.npz"),
                 "--out", str(tmp_path / "kp.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sac_ae" in err and "no keypoints" in err
    assert not (tmp_path / "kp.npz").exists()
