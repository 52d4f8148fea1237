"""Reinforcement learning from pixels: the agents (SAC with its representations), the replay buffer, augmentation,
the training loop and evaluation."""
