"""Evaluation protocols: landmark regression from keypoints (and, later, statistics over runs)."""
