"""SAC+AE update semantics: which parameters each loss moves, finiteness, save/load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from kprl.config import TrainConfig
from kprl.rl.factory import make_agent
from kprl.rl.replay import Batch
from kprl.rl.sac import SACAgent, squashed_gaussian

OBS_SHAPE = (9, 84, 84)
ACTION_DIM = 2


def small_config(**overrides: object) -> TrainConfig:
    cfg = TrainConfig()
    cfg.sac.hidden_dim = 64
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def random_batch(batch_size: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch_size, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    next_obs = torch.randint(0, 256, (batch_size, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    action = torch.rand(batch_size, ACTION_DIM, generator=g) * 2 - 1
    reward = torch.rand(batch_size, 1, generator=g)
    discount = torch.ones(batch_size, 1)
    return Batch(obs, action, reward, discount, next_obs, None)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture()
def agent() -> SACAgent:
    torch.manual_seed(0)
    return make_agent(small_config(), OBS_SHAPE, ACTION_DIM, "cpu")


def test_actor_conv_is_tied_to_critic_and_heads_are_not(agent: SACAgent) -> None:
    assert agent.actor.encoder.trunk is agent.critic.encoder.trunk
    assert agent.actor.encoder.heads[0] is not agent.critic.encoder.heads[0]
    assert agent.critic_target.encoder.trunk is not agent.critic.encoder.trunk


def test_full_update_moves_every_trained_part_and_is_finite(agent: SACAgent) -> None:
    before = {name: snapshot(m) for name, m in agent.modules().items()}
    metrics = agent.update(random_batch(), step=0)
    for key in ("train/critic_loss", "train/actor_loss", "train/alpha_loss", "train/reconstruction_loss"):
        assert key in metrics and np.isfinite(metrics[key])
    critic_changed = changed(before["critic"], agent.critic)
    assert any(k.startswith("encoder.trunk") for k in critic_changed)
    assert any(k.startswith("encoder.heads") for k in critic_changed)
    assert any(k.startswith("q1") for k in critic_changed) and any(k.startswith("q2") for k in critic_changed)
    actor_changed = changed(before["actor"], agent.actor)
    assert any(k.startswith("mlp") for k in actor_changed)
    assert any(k.startswith("encoder.heads") for k in actor_changed)
    assert changed(before["objective0_ae"], agent.objectives[0])  # decoder trained
    assert changed(before["critic_target"], agent.critic_target)  # EMA moved the targets


def test_actor_loss_never_reaches_the_encoder_or_critic(agent: SACAgent) -> None:
    critic_before = snapshot(agent.critic)
    actor_before = snapshot(agent.actor)
    obs = random_batch().obs
    agent._update_actor_and_alpha(obs)
    assert not changed(critic_before, agent.critic), "actor/alpha update changed critic or shared conv"
    assert all(p.grad is None for p in agent.critic.encoder.trunk.parameters())
    moved = changed(actor_before, agent.actor)
    assert moved and not any(k.startswith("encoder.trunk") for k in moved)


def test_reconstruction_update_moves_encoder_and_decoder_only(agent: SACAgent) -> None:
    critic_before = snapshot(agent.critic)
    actor_heads_before = snapshot(agent.actor.mlp)
    agent._update_objectives(random_batch().obs, None, [0])
    moved = changed(critic_before, agent.critic)
    assert moved and all(k.startswith("encoder.") for k in moved), moved
    assert not changed(actor_heads_before, agent.actor.mlp)


def test_odd_steps_skip_actor_and_target_updates(agent: SACAgent) -> None:
    actor_before = snapshot(agent.actor.mlp)
    target_before = snapshot(agent.critic_target)
    metrics = agent.update(random_batch(), step=1)
    assert "train/actor_loss" not in metrics
    assert not changed(actor_before, agent.actor.mlp)
    assert not changed(target_before, agent.critic_target)


def test_target_encoder_moves_at_encoder_tau_and_q_at_critic_tau(agent: SACAgent) -> None:
    agent.objectives[0].update_every = 4  # no reconstruction step after the EMA at step 2
    target_before = snapshot(agent.critic_target)
    agent.update(random_batch(), step=2)
    online = agent.critic.state_dict()
    after = agent.critic_target.state_dict()
    for key, tau in (("encoder.heads.0.fc.weight", 0.05), ("q1.0.weight", 0.01)):
        expected = (1 - tau) * target_before[key] + tau * online[key]
        torch.testing.assert_close(after[key], expected, rtol=1e-5, atol=1e-6)


def test_squashed_gaussian_log_prob_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu = torch.randn(5, 3)
    log_std = torch.randn(5, 3) * 0.3
    torch.manual_seed(1)
    _, pi, log_pi = squashed_gaussian(mu, log_std, deterministic=False)
    base = torch.distributions.Normal(mu, log_std.exp())
    u = torch.atanh(pi.clamp(-0.999999, 0.999999))
    expected = (base.log_prob(u) - torch.log(1 - pi.pow(2) + 1e-6)).sum(-1, keepdim=True)
    torch.testing.assert_close(log_pi, expected, rtol=1e-3, atol=1e-3)


def test_save_load_gives_identical_actions(agent: SACAgent) -> None:
    agent.update(random_batch(), step=0)
    state = copy.deepcopy(agent.state_dict())
    torch.manual_seed(123)
    other = make_agent(small_config(), OBS_SHAPE, ACTION_DIM, "cpu")
    other.load_state_dict(state)
    obs = np.random.default_rng(0).integers(0, 256, OBS_SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), other.act(obs, deterministic=True))
    # training continues identically too (optimiser states restored)
    torch.manual_seed(7)
    m1 = agent.update(random_batch(seed=3), step=2)
    torch.manual_seed(7)
    m2 = other.update(random_batch(seed=3), step=2)
    assert m1 == m2


def test_bf16_update_is_finite_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    fp32 = make_agent(small_config(), OBS_SHAPE, ACTION_DIM, "cpu")
    bf16 = make_agent(small_config(precision="bf16"), OBS_SHAPE, ACTION_DIM, "cpu")
    bf16.load_state_dict(copy.deepcopy(fp32.state_dict()))
    batch = random_batch()
    torch.manual_seed(5)
    m32 = fp32.update(batch, step=0)
    torch.manual_seed(5)
    m16 = bf16.update(batch, step=0)
    for key in ("train/critic_loss", "train/reconstruction_loss"):
        assert np.isfinite(m16[key])
        assert abs(m16[key] - m32[key]) <= 0.05 * abs(m32[key]) + 1e-3, (key, m16[key], m32[key])
