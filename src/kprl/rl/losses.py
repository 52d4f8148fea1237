"""SAC's losses, written once: both update paths (:mod:`kprl.rl.sac`, :mod:`kprl.rl.fast_update`) call them.

Haarnoja et al. 2018a (SAC, arXiv 1801.01290) and 2018b (learned temperature, arXiv 1812.05905).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_td_target(
    reward: torch.Tensor, discount: torch.Tensor, gamma: float, target_q1: torch.Tensor, target_q2: torch.Tensor,
    alpha: torch.Tensor, next_log_pi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Soft Bellman backup y = r + γ d (min(Q̄1, Q̄2)(s', a') − α log π(a'|s')), a' ~ π(s') (2018a, Eq. 3);
    ``discount`` d is 0 only at true termination, so time-limit ends bootstrap."""
    return reward + discount * gamma * (torch.min(target_q1, target_q2) - alpha.detach() * next_log_pi)


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
    """J_Q of the twin critics: MSE(Q1, y) + MSE(Q2, y) (2018a, Eq. 5)."""
    return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)


def actor_loss(alpha: torch.Tensor, log_pi: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """J_π = E[α log π(a|s) − min(Q1, Q2)(s, a)], a ~ π(s) reparameterised (2018a, Eq. 7); α is a constant here."""
    return (alpha.detach() * log_pi - torch.min(q1, q2)).mean()


def temperature_loss(alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(α) = E[α (−log π(a|s) − H̄)]: pushes the policy's entropy towards H̄ (2018b, Eq. 18)."""
    return (alpha * (-log_pi - target_entropy).detach()).mean()


def critic_metrics(loss: torch.Tensor, q1: torch.Tensor, target_q: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"critic_loss": loss.detach(), "q1": q1.detach().mean(), "target_q": target_q.mean()}
