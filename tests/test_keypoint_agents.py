"""The poster's keypoint agents, sac_ae_imm and sac_imm: features, which parameters each loss moves, the shared
crop of observation and IMM target, save/load, and a real end-to-end run on cartpole."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from kprl.config import TrainConfig
from kprl.rl.factory import make_agent
from kprl.rl.replay import Batch
from kprl.rl.representations import IMMObjective
from kprl.rl.sac import SACAgent
from kprl.rl.train import train

OBS_SHAPE = (9, 84, 84)
ACTION_DIM = 1


def small_config(agent: str, **overrides: object) -> TrainConfig:
    cfg = TrainConfig(agent=agent)  # type: ignore[arg-type]
    cfg.sac.hidden_dim = 32
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    cfg.keypoint.keypoints = 4
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.keypoint.keypoints = 4
    return cfg


def batch_with_target(batch_size: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    frames = lambda: torch.randint(0, 256, (batch_size, *OBS_SHAPE), generator=g, dtype=torch.uint8)  # noqa: E731
    obs, next_obs, target = frames(), frames(), frames()
    action = torch.rand(batch_size, ACTION_DIM, generator=g) * 2 - 1
    return Batch(obs, action, torch.rand(batch_size, 1, generator=g), torch.ones(batch_size, 1), next_obs, target)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def make(agent: str, **overrides: object) -> SACAgent:
    torch.manual_seed(0)
    return make_agent(small_config(agent, **overrides), OBS_SHAPE, ACTION_DIM, "cpu")


@pytest.mark.parametrize(("name", "feature_dim", "heads"), [("sac_ae_imm", 16 + 8, 2), ("sac_imm", 8, 1)])
def test_features_are_latent_and_or_keypoints(name: str, feature_dim: int, heads: int) -> None:
    agent = make(name)
    assert agent.critic.encoder.feature_dim == feature_dim and len(agent.critic.encoder.heads) == heads
    assert agent.target_offset == 3  # the first target stack that shares no frame with the source
    imm = [o for o in agent.objectives if isinstance(o, IMMObjective)]
    assert len(imm) == 1 and imm[0].gennet.trunk.convs[0].in_channels == 9
    keypoint_head = agent.critic.encoder.heads[-1]
    # the actor reads the critic's keypoint head itself, but has its own latent head (as SAC+AE)
    assert agent.actor.encoder.heads[-1] is keypoint_head
    if heads == 2:
        assert agent.actor.encoder.heads[0] is not agent.critic.encoder.heads[0]
    features = agent.critic.encoder(batch_with_target().obs).features
    assert features.shape == (6, feature_dim) and (features[:, -8:].abs() <= 1).all()


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_imm_update_moves_encoder_keypoint_head_and_gennet_only(name: str) -> None:
    agent = make(name)
    critic_before, actor_before = snapshot(agent.critic), snapshot(agent.actor.mlp)
    imm_index = next(i for i, o in enumerate(agent.objectives) if isinstance(o, IMMObjective))
    gennet_before = snapshot(agent.objectives[imm_index])
    batch = batch_with_target()
    metrics = agent._update_objectives(batch.obs, batch.target_obs, [imm_index])
    assert torch.isfinite(metrics["imm_loss"])
    moved = changed(critic_before, agent.critic)
    head = len(agent.critic.encoder.heads) - 1
    assert any(k.startswith("encoder.trunk") for k in moved), moved
    assert any(k.startswith(f"encoder.heads.{head}.score") for k in moved), moved
    assert all(k.startswith(("encoder.trunk", f"encoder.heads.{head}.")) for k in moved), moved  # no Q, no AE head
    assert changed(gennet_before, agent.objectives[imm_index])
    assert not changed(actor_before, agent.actor.mlp)


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_actor_update_reaches_neither_encoder_nor_shared_keypoint_head(name: str) -> None:
    agent = make(name)
    critic_before, actor_before = snapshot(agent.critic), snapshot(agent.actor)
    agent._update_actor_and_alpha(batch_with_target().obs)
    assert not changed(critic_before, agent.critic)
    moved = changed(actor_before, agent.actor)
    assert moved and all(k.startswith("mlp") or k.startswith("encoder.heads.0.") for k in moved), moved
    if name == "sac_imm":
        assert all(k.startswith("mlp") for k in moved)


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_full_update_trains_every_part_and_logs_imm_loss(name: str) -> None:
    agent = make(name)
    before = {n: snapshot(m) for n, m in agent.modules().items()}
    metrics = agent.update(batch_with_target(), step=0)
    assert np.isfinite(metrics["train/imm_loss"]) and np.isfinite(metrics["train/critic_loss"])
    assert metrics["train/keypoint_separation"] > 0 and metrics["train/keypoint_batch_std"] >= 0
    assert ("train/reconstruction_loss" in metrics) == (name == "sac_ae_imm")
    for module_name in before:
        assert changed(before[module_name], agent.modules()[module_name]), module_name


def test_update_without_target_observation_is_refused() -> None:
    agent = make("sac_imm")
    with pytest.raises(ValueError, match=f"target_offset={agent.target_offset}"):
        agent.update(batch_with_target()._replace(target_obs=None), step=0)


def test_observation_and_imm_target_share_one_crop_window() -> None:
    agent = make("sac_imm", augmentation="crop")
    batch = batch_with_target()
    big = torch.randint(0, 256, (6, 9, 100, 100), dtype=torch.uint8)
    seen: dict[str, torch.Tensor] = {}
    imm = agent.objectives[0]
    original = imm.loss

    def spy(inputs):  # type: ignore[no-untyped-def]
        seen["obs"], seen["target"] = inputs.obs, inputs.target_obs
        return original(inputs)

    imm.loss = spy  # type: ignore[method-assign]
    agent.update(batch._replace(obs=big, target_obs=big.clone(), next_obs=big.clone()), step=1)
    assert seen["obs"].shape[-1] == 84 and torch.equal(seen["obs"], seen["target"])


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_save_load_round_trip_continues_identically(name: str) -> None:
    agent = make(name)
    agent.update(batch_with_target(), step=0)
    other = make(name)
    other.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs = np.random.default_rng(0).integers(0, 256, OBS_SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), other.act(obs, deterministic=True))
    torch.manual_seed(5)
    a = agent.update(batch_with_target(seed=1), step=2)
    torch.manual_seed(5)
    b = other.update(batch_with_target(seed=1), step=2)
    assert a == b


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_end_to_end_run_on_cartpole_logs_imm_loss(name: str, tmp_path: Path) -> None:
    cfg = small_config(name, run_dir=tmp_path / "run", env_steps=96, seed_steps=48, eval_every=48,
                       checkpoint_every=48, eval_episodes=1, batch_size=8, video=False, log_every=8)  # fmt: skip
    cfg.env.time_limit = 0.32  # 4 actions of 8 physics steps per episode
    summary = train(cfg, quiet=True)
    assert summary["env_steps"] == 96
    with open(tmp_path / "run" / "train.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/imm_loss"]) for r in rows if r.get("train/imm_loss")]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("name", ["sac_ae_imm", "sac_imm"])
def test_per_frame_keypoints_score_each_frame_alone(name: str) -> None:
    agent = make(name, keypoint=_keypoint(per_frame=True))
    assert agent.critic.encoder.feature_dim == (16 if name == "sac_ae_imm" else 0) + 2 * 4 * 3
    obs = batch_with_target().obs
    kp = agent.keypoints(obs)
    assert kp is not None and kp.shape == (6, 12, 2)
    # frame s's keypoints depend on frame s only: change the newest frame, the two older frames' keypoints stay
    changed_obs = obs.clone()
    changed_obs[:, 6:] = 255 - changed_obs[:, 6:]
    kp2 = agent.keypoints(changed_obs)
    torch.testing.assert_close(kp2[:, :8], kp[:, :8])
    assert not torch.allclose(kp2[:, 8:], kp[:, 8:])
    metrics = agent.update(batch_with_target(), step=0)
    assert np.isfinite(metrics["train/imm_loss"])


def _keypoint(**values: object):  # type: ignore[no-untyped-def]
    from kprl.config import KeypointAgentConfig

    return KeypointAgentConfig(keypoints=4, **values)  # type: ignore[arg-type]


def train_standalone_imm(root: Path, **model: object) -> Path:
    """A standalone IMM run of two updates on synthetic frames, whose KeyNet fits `pretrained_agent`."""
    from kprl import config as C
    from kprl.data.synthetic import write_shapes_dataset
    from kprl.imm.train import train_imm

    data = write_shapes_dataset(root / "data", episodes=4, length=6, size=40)
    cfg = C.IMMTrainConfig(data=data, run_dir=root / "run", steps=2, batch_size=4, image_size=32, val_pairs=4,
                           eval_every=2, checkpoint_every=2, log_every=2, threads=1,
                           model=C.IMMConfig(keypoints=4, num_conv_layers=2, num_filters=8, **model))  # type: ignore[arg-type]  # fmt: skip
    train_imm(cfg, quiet=True)
    return root / "run"


@pytest.fixture(scope="module")
def standalone_imm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_standalone_imm(tmp_path_factory.mktemp("imm"))


def pretrained_agent(name: str, imm_run: Path, freeze: bool, **encoder: int) -> SACAgent:
    cfg = small_config(name, keypoint=_keypoint(per_frame=True, pretrained_imm=imm_run, freeze_keynet=freeze))
    cfg.encoder.num_conv_layers = encoder.get("num_conv_layers", 2)
    cfg.env.image_size = 32
    torch.manual_seed(0)
    return make_agent(cfg, (9, 32, 32), ACTION_DIM, "cpu")


@pytest.mark.parametrize("freeze", [False, True])
def test_pretrained_imm_initialises_the_keynet_frozen_or_fine_tuned(standalone_imm: Path, freeze: bool) -> None:
    from kprl.imm.checkpoint import load_imm

    keynet = load_imm(standalone_imm).model.keynet
    agent = pretrained_agent("sac_imm", standalone_imm, freeze)
    trunk, head = agent.critic.encoder.trunk.frame_trunk, agent.critic.encoder.heads[0]
    for a, b in zip(trunk.state_dict().values(), keynet.trunk.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(head.score.weight, keynet.head.score.weight)
    assert (agent.target_offset is None) == freeze  # frozen: no IMM objective
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    stacks = lambda: torch.randint(0, 256, (4, 9, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    agent.update(Batch(stacks(), torch.zeros(4, 1), torch.ones(4, 1), torch.ones(4, 1), stacks(), stacks()), 0)
    moved = any(not torch.equal(before[k], v) for k, v in trunk.state_dict().items())
    assert moved != freeze


def test_pretrained_imm_that_does_not_fit_is_a_one_line_error(standalone_imm: Path) -> None:
    from kprl.errors import ConfigError

    with pytest.raises(ConfigError, match="num_conv_layers 2 \\(agent: 3\\)"):
        pretrained_agent("sac_imm", standalone_imm, False, num_conv_layers=3)


def test_pretrained_imm_with_padded_convs_is_refused(tmp_path: Path) -> None:
    from kprl.errors import ConfigError

    padded = train_standalone_imm(tmp_path, same_padding=True)  # the agents' encoder is unpadded
    with pytest.raises(ConfigError, match="same_padding True \\(agent: False\\)"):
        pretrained_agent("sac_imm", padded, False)


@pytest.mark.parametrize("per_frame", [False, True])
def test_keypoint_features_add_what_is_under_each_keypoint(per_frame: bool) -> None:
    agent = make("sac_imm", keypoint=_keypoint(per_frame=per_frame, keypoint_features=True))
    frames = 3 if per_frame else 1
    assert agent.critic.encoder.feature_dim == 2 * 4 * frames + 4 * 8 * frames
    head = agent.critic.encoder.heads[0]
    maps = torch.rand(2, 8 * frames, 9, 9)
    out = head(maps)
    kp = head.keypoints(maps)
    # keypoint 0 of frame 0: the Gaussian-weighted mean of frame 0's maps
    g = kp.gauss_maps[0, 0]
    expected = (maps[0, :8] * g).sum((-1, -2)) / g.sum()
    torch.testing.assert_close(out[0, 2 * 4 * frames : 2 * 4 * frames + 8], expected)
    assert np.isfinite(agent.update(batch_with_target(), step=0)["train/critic_loss"])


def test_keypoint_spread_tells_collapsed_from_moving_keypoints() -> None:
    from kprl.rl.representations import keypoint_spread

    collapsed = torch.zeros(16, 3, 2) + torch.tensor([0.2, -0.5])
    out = keypoint_spread(collapsed)
    assert float(out["keypoint_separation"]) == 0.0 and float(out["keypoint_batch_std"]) == 0.0
    # Keypoint 0 fixed at the origin, keypoint 1 at x = +-1 across the batch: apart by 1 in every observation, and
    # the batch std of keypoint 1 is 1, of keypoint 0 is 0 (mean over keypoints 0.5).
    sign = torch.tensor([1.0, -1.0]).repeat(8)
    moving = torch.zeros(16, 2, 2)
    moving[:, 1, 0] = sign
    out = keypoint_spread(moving)
    assert float(out["keypoint_separation"]) == pytest.approx(1.0)
    assert float(out["keypoint_batch_std"]) == pytest.approx(0.5)
    assert "keypoint_separation" not in keypoint_spread(moving[:, :1])


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_objectives_on_their_own_schedules_step_only_when_due(path: str) -> None:
    """sac_ae_imm with reconstruction every 2 and IMM every 3 updates: each update runs exactly the due losses."""
    torch.manual_seed(0)
    cfg = small_config("sac_ae_imm", update_path=path)
    cfg.ae.decoder_update_every, cfg.keypoint.imm_update_every = 2, 3
    agent = make_agent(cfg, OBS_SHAPE, ACTION_DIM, "cpu")
    decoder, gennet = agent.objectives[0], agent.objectives[1]
    for step in range(7):
        before = snapshot(decoder), snapshot(gennet)
        metrics = agent.update(batch_with_target(seed=step), step)
        assert ("train/reconstruction_loss" in metrics) == (step % 2 == 0)
        assert ("train/imm_loss" in metrics) == (step % 3 == 0)
        assert bool(changed(before[0], decoder)) == (step % 2 == 0)
        assert bool(changed(before[1], gennet)) == (step % 3 == 0)
        assert all(np.isfinite(v) for v in metrics.values())


def test_checkpoints_with_the_layer_names_of_kprl_0_2_0_still_load() -> None:
    # 0.2.0 called the actor's MLP `trunk` and the per-frame wrapper's conv trunk `trunk` (`trunk.trunk.convs...`).
    saved = make("sac_ae_imm", keypoint=_keypoint(per_frame=True))
    state = saved.state_dict()
    old = {}
    for name in ("actor", "critic", "critic_target"):
        old[name] = {k.replace("frame_trunk.", "trunk.").replace("mlp.", "trunk.") if k.startswith(("mlp.", "encoder"))
                     else k: v for k, v in state[name].items()}  # fmt: skip
    assert any(k.startswith("trunk.") for k in old["actor"]) and any(".trunk.trunk." in k for k in old["critic"])
    loaded = make("sac_ae_imm", keypoint=_keypoint(per_frame=True))
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(1.0)
    loaded.load_state_dict({**state, **old})
    for name in ("actor", "critic", "critic_target"):
        module = getattr(loaded, name)
        assert not changed(state[name], module), name
