"""What every run needs around the learning itself: run directories, atomic files, checkpoints, logs, progress,
hardware, videos, provenance, speed estimates and ``kprl doctor``."""
