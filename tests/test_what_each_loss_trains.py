"""Which parameters each loss moves, at which learning rate, and in which precision the value and policy heads run.

Every loss has an optimiser of its own. To see what one loss trains, all other optimisers get learning rate 0 and
one full update (step 0: critic, actor, temperature, targets and every objective are due) is run: the modules whose
parameters changed are the ones that loss trains. Checked for every agent, both update paths, and with the TD
gradient reaching the encoder (SAC+AE, the poster) or stopped before it (``--rl-trains-encoder False``, ATC).
"""

from __future__ import annotations

import copy

import pytest
import torch

from kprl.config import TrainConfig
from kprl.rl.factory import make_agent
from kprl.rl.replay import Batch
from kprl.rl.sac import SACAgent

OBS_SHAPE = (9, 64, 64)
ACTION_DIM = 2


def config(agent: str, **sections: dict[str, object]) -> TrainConfig:
    cfg = TrainConfig(agent=agent)  # type: ignore[arg-type]
    cfg.env.image_size = 64
    cfg.sac.hidden_dim = 32
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 8
    cfg.keypoint.keypoints = 2
    cfg.precision = "fp32"
    for section, values in sections.items():
        target = cfg if section == "top" else getattr(cfg, section)
        for key, value in values.items():
            setattr(target, key, value)
    return cfg


def batch(seed: int = 0, size: int = 6) -> Batch:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (size, 4, 3, *OBS_SHAPE[1:]), generator=g, dtype=torch.uint8)
    obs, next_obs = frames[:, :3].flatten(1, 2), frames[:, 1:].flatten(1, 2)
    action = torch.rand(size, ACTION_DIM, generator=g) * 2 - 1
    return Batch(obs, action, torch.rand(size, 1, generator=g) * 8, torch.ones(size, 1), next_obs, next_obs)


def module_names(agent: SACAgent) -> dict[str, torch.nn.Module]:
    """The parts a loss can train, by name (the actor's heads only where they are its own)."""
    critic = agent.critic
    parts: dict[str, torch.nn.Module] = {"q": torch.nn.ModuleList([critic.q1, critic.q2]), "trunk": critic.encoder.trunk}
    for i, r in enumerate(agent.representations):
        parts[f"{r.name}_head"] = critic.encoder.heads[i]
        if agent.actor.encoder.heads[i] is not critic.encoder.heads[i]:
            parts[f"actor_{r.name}_head"] = agent.actor.encoder.heads[i]
    parts["actor_mlp"] = agent.actor.mlp
    for objective in agent.objectives:
        parts[f"{objective.name}_net"] = objective
    return parts


def moved_by(agent: SACAgent, optimizer: str) -> set[str]:
    """Names of the parts one update moves when only ``optimizer`` has a learning rate."""
    agent = copy.deepcopy(agent)
    for name, opt in agent.optimizers().items():
        if name != optimizer:
            for group in opt.param_groups:
                group["lr"] = 0.0
    parts = module_names(agent)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in parts.items()}
    alpha = agent.log_alpha.detach().clone()
    torch.manual_seed(3)
    agent.update(batch(), step=0)
    moved = {
        n for n, m in parts.items() if any(not torch.equal(a, p) for a, p in zip(before[n], m.parameters(), strict=True))
    }
    if not torch.equal(alpha, agent.log_alpha):
        moved.add("log_alpha")
    return moved


def build(agent: str, path: str, rl_trains_encoder: bool) -> SACAgent:
    torch.manual_seed(0)
    cfg = config(agent, top={"update_path": path}, sac={"rl_trains_encoder": rl_trains_encoder})
    return make_agent(cfg, OBS_SHAPE, ACTION_DIM, "cpu")


EXPECTED = {
    # agent: {optimiser: parts it trains when the TD loss trains the encoder}
    "sac_ae": {
        "critic_opt": {"q", "trunk", "ae_head"},
        "actor_opt": {"actor_mlp", "actor_ae_head"},
        "alpha_opt": {"log_alpha"},
        "objective0_opt": {"trunk", "ae_head", "ae_net"},
    },
    "sac_imm": {
        "critic_opt": {"q", "trunk", "imm_head"},
        "actor_opt": {"actor_mlp"},  # the keypoint head is the critic's, read on detached maps
        "alpha_opt": {"log_alpha"},
        "objective0_opt": {"trunk", "imm_head", "imm_net"},
    },
    "sac_ae_imm": {
        "critic_opt": {"q", "trunk", "ae_head", "imm_head"},
        "actor_opt": {"actor_mlp", "actor_ae_head"},
        "alpha_opt": {"log_alpha"},
        "objective0_opt": {"trunk", "ae_head", "ae_net"},
        "objective1_opt": {"trunk", "imm_head", "imm_net"},
    },
}


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("agent_name", sorted(EXPECTED))
@pytest.mark.parametrize("rl_trains_encoder", [True, False])
def test_each_loss_trains_exactly_its_parts(agent_name: str, path: str, rl_trains_encoder: bool) -> None:
    agent = build(agent_name, path, rl_trains_encoder)
    expected = copy.deepcopy(EXPECTED[agent_name])
    if not rl_trains_encoder:
        expected["critic_opt"] = {"q"}  # decoupled: the encoder is the auxiliary losses' alone
    assert set(agent.optimizers()) == set(expected)
    for optimizer, parts in expected.items():
        assert moved_by(agent, optimizer) == parts, optimizer


@pytest.mark.parametrize("agent_name", ["sac_imm", "sac_ae_imm"])
def test_imm_learning_rate_is_the_rate_of_every_parameter_the_imm_loss_reaches(agent_name: str) -> None:
    """--imm-lr moves the shared trunk, the keypoint head and the GenNet; --encoder-lr (the AE's) does not."""
    imm_index = 0 if agent_name == "sac_imm" else 1
    optimizer = f"objective{imm_index}_opt"
    for imm_lr, encoder_lr, moves in [(0.0, 1e-3, False), (1e-3, 0.0, True)]:
        torch.manual_seed(0)
        cfg = config(agent_name, keypoint={"imm_lr": imm_lr}, ae={"encoder_lr": encoder_lr})
        agent = make_agent(cfg, OBS_SHAPE, ACTION_DIM, "cpu")
        moved = moved_by(agent, optimizer)
        assert moved == ({"trunk", "imm_head", "imm_net"} if moves else set()), (imm_lr, encoder_lr, moved)


def test_ae_encoder_learning_rate_moves_the_trunk_under_reconstruction() -> None:
    for encoder_lr, expected in [(0.0, {"ae_net"}), (1e-3, {"trunk", "ae_head", "ae_net"})]:
        torch.manual_seed(0)
        agent = make_agent(config("sac_ae", ae={"encoder_lr": encoder_lr}), OBS_SHAPE, ACTION_DIM, "cpu")
        assert moved_by(agent, "objective0_opt") == expected


def bf16_agent(agent_name: str) -> SACAgent:
    torch.manual_seed(0)
    return make_agent(config(agent_name, top={"precision": "bf16"}), OBS_SHAPE, ACTION_DIM, "cpu")


@pytest.mark.parametrize("agent_name", ["sac_ae", "sac_imm"])
def test_bf16_q_values_are_fp32_computations_of_the_features(agent_name: str) -> None:
    """Q around 300, where bf16's spacing is 2: inside the bf16 autocast the Q-values are the fp32 values."""
    agent = bf16_agent(agent_name)
    assert agent.use_bf16
    with torch.no_grad():
        for q in (agent.critic.q1, agent.critic.q2):
            q[-1].bias.fill_(300.0)
            q[-1].weight.mul_(0.05)
    b = batch()
    with torch.no_grad(), agent.autocast():
        features = agent.critic.encoder(b.obs).features
        q1, q2 = agent.critic.q_values(features, b.action)
    assert features.dtype == torch.float32 and q1.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        x = torch.cat([features, b.action], dim=-1)
        ref1, ref2 = agent.critic.q1(x), agent.critic.q2(x)
    assert 290 < float(q1.min()) and float(q1.max()) < 310
    torch.testing.assert_close(q1, ref1, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(q2, ref2, rtol=1e-6, atol=1e-4)
    # bf16 would have put every value on a multiple of 2
    assert len(set(q1.flatten().tolist())) == q1.numel()
    assert not all(float(v) % 2 == 0 for v in q1.flatten())


def test_bf16_policy_log_prob_is_the_fp32_computation() -> None:
    agent = bf16_agent("sac_ae")
    features = torch.randn(6, agent.actor.encoder.feature_dim)
    torch.manual_seed(11)
    with agent.autocast():
        mu, pi, log_pi = agent.actor.from_features(features)
    torch.manual_seed(11)
    ref_mu, ref_pi, ref_log_pi = agent.actor.from_features(features)
    assert log_pi.dtype == torch.float32
    for value, reference in ((mu, ref_mu), (pi, ref_pi), (log_pi, ref_log_pi)):
        torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)


def test_checkpoint_of_the_shared_encoder_optimiser_layout_is_refused_in_one_line() -> None:
    agent = build("sac_ae", "fast", True)
    state = agent.state_dict()
    state["encoder_opt"] = state.pop("objective0_opt")
    with pytest.raises(ValueError, match="earlier kprl"):
        agent.load_state_dict(state)
