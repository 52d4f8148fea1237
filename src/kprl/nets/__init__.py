"""nn.Modules only: the encoder and decoder of SAC+AE, the IMM networks and the keypoint bottleneck."""
