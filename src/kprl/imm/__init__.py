"""The IMM keypoint model on its own (``kprl imm``, ``kprl keypoints``): frame pairs, training, checkpoints,
evaluation against the true landmarks, and detection on a user's frames."""
