"""Standalone IMM training on a frame dataset (``kprl imm train``): the poster's "key point learning" experiment.

Episodes are split into training and validation sets (by episode, so no frame of a validation episode is ever
trained on). Every update draws pairs of frames of one training episode (`kprl.imm.pairs`), random-crops them with
one window per pair, and minimises the IMM reconstruction MSE (plus, with ``--separation-weight``, the
temporal separation loss; train.csv's ``loss`` is the MSE alone). Every ``eval_every`` updates the validation loss
is measured on a fixed set of centre-cropped validation pairs, together with the landmark error of a ridge
regressor from keypoints to the true landmarks (fitted on training frames, scored on validation frames; see
`kprl.analysis.landmarks`). Logs, checkpoints and resume work as for agents: rerunning the same command
continues from the newest checkpoint, and CSV rows written after it are dropped.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kprl import config as C
from kprl.analysis.landmarks import angle_bins, pole_angles, regression_report
from kprl.data.frames import FrameDataset, load_dataset
from kprl.errors import CheckpointError, ConfigError, DataError, TrainingError, first_line
from kprl.imm.checkpoint import MODEL_KIND, EpisodeSplit, split_episodes, write_split
from kprl.imm.pairs import PairSampler, centre_offset, crop_frames, crop_windows
from kprl.nets.imm import IMM
from kprl.runtime.checkpoint import (
    find_checkpoint,
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kprl.runtime.hardware import (
    cpu_identity,
    describe_machine,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)
from kprl.runtime.logger import RunLogger, Throughput
from kprl.runtime.progress import format_seconds
from kprl.runtime.provenance import record_start
from kprl.runtime.run_dir import prepare_run_dir
from kprl.viz.imm import write_imm_figures

# Training frames used to fit the landmark regressor during training (a subsample: the fit needs few).
REGRESSION_TRAIN_FRAMES = 2000


def frames_of(data: FrameDataset, episodes: np.ndarray) -> np.ndarray:
    """Indices of all frames of the given episodes, in dataset order."""
    return np.flatnonzero(np.isin(data.episode, episodes))


@torch.no_grad()
def detect_keypoints(
    model: IMM, frames: np.ndarray, indices: np.ndarray, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Keypoints [N, K, 2] in pixels of the centre-cropped frames[indices] (HWC uint8), x right, y down."""
    size = model.image_size
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        windows = crop_windows(frames.shape[1], frames.shape[2], size, len(chunk), None)
        x = crop_frames(frames, chunk, windows, size).to(device)
        out.append(model.keypoint_pixels(x).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.cfg.keypoints, 2), np.float32)


@torch.no_grad()
def pairs_loss(
    model: IMM,
    frames: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    device: torch.device,
    autocast: Any = None,
    batch_size: int = 256,
) -> float:
    """Mean IMM reconstruction MSE over the pairs frames[source[i]] -> frames[target[i]], centre-cropped to the
    model's input, in eval mode (restored after); ``autocast`` is an optional context manager factory."""
    size = model.image_size
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, len(source), batch_size):
            s, t = source[start : start + batch_size], target[start : start + batch_size]
            windows = crop_windows(frames.shape[1], frames.shape[2], size, len(s), None)
            with autocast() if autocast is not None else contextlib.nullcontext():
                loss, _ = model.loss(
                    crop_frames(frames, s, windows, size).to(device),
                    crop_frames(frames, t, windows, size).to(device),
                )
            total += float(loss) * len(s)
    finally:
        model.train(was_training)
    return total / max(len(source), 1)


def landmark_report(
    model: IMM,
    data: FrameDataset,
    split: EpisodeSplit,
    device: torch.device,
    max_train_frames: int | None = None,
    ridge: float = 1e-3,
    by_pole_angle: bool = False,
) -> dict[str, float]:
    """Held-out landmark error (pixels of the centre crop) of a ridge regressor fitted on training frames; with
    ``by_pole_angle`` on cartpole, also per pole-angle bin (`kprl.analysis.landmarks.angle_bins`)."""
    train_idx = frames_of(data, split.train)
    if max_train_frames is not None and len(train_idx) > max_train_frames:
        train_idx = train_idx[np.linspace(0, len(train_idx) - 1, max_train_frames).astype(np.int64)]
    val_idx = frames_of(data, split.val)
    shift = centre_offset(data.image_size, model.image_size)
    angles = pole_angles(data.landmarks[val_idx], data.landmark_names) if by_pole_angle else None
    return regression_report(
        detect_keypoints(model, data.frames, train_idx, device),
        data.landmarks[train_idx] - shift,
        detect_keypoints(model, data.frames, val_idx, device),
        data.landmarks[val_idx] - shift,
        model.image_size,
        data.landmark_names,
        ridge,
        test_groups=angle_bins(angles) if angles is not None else None,
    )


class IMMTrainer:
    """Owns dataset, model, optimiser and logger of one standalone IMM run; :meth:`run` trains to ``cfg.steps``."""

    def __init__(self, cfg: C.IMMTrainConfig, quiet: bool = False) -> None:
        C.validate_imm_train(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        keep_freed_memory()
        self.data = load_dataset(Path(cfg.data))
        if self.data.image_size < cfg.image_size:
            raise ConfigError(
                f"--image-size {cfg.image_size} is larger than the dataset's {self.data.image_size} px frames"
            )
        self.split = split_episodes(self.data.episode_ids(), cfg.val_fraction, cfg.seed)
        # Before the run directory exists, so that data too short for the pairs asked for leaves nothing behind.
        try:
            self.train_pairs = PairSampler(self.data.episode, self.split.train, cfg.max_offset, cfg.min_offset)
            val_sampler = PairSampler(self.data.episode, self.split.val, cfg.max_offset, cfg.min_offset)
        except ValueError as exc:
            raise DataError(f"{cfg.data}: {exc}") from exc
        self.run_dir = prepare_run_dir(cfg)
        remove_stale_temporaries(self.run_dir)
        write_split(self.run_dir, self.split)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.model = IMM(cfg.model, cfg.image_size).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.model.lr)
        # A fixed validation set, drawn from its own seed so that it does not depend on training progress.
        self.val_source, self.val_target = val_sampler.sample(
            cfg.val_pairs, np.random.default_rng(cfg.seed + 1)
        )
        self.step = 0
        self.wall_seconds = 0.0
        resumed = self._resume()
        record_start(
            self.run_dir,
            step=self.step,
            machine=describe_machine(self.device),
            cpu=cpu_identity(),
            device=str(self.device),
            threads=torch.get_num_threads(),
            precision=self.precision,
            torch=torch.__version__,
        )
        # Without a checkpoint every earlier row is from a killed first attempt: start the logs afresh.
        self.logger = RunLogger(
            self.run_dir, resume_step=self.step if resumed else -1, quiet=quiet, key="step"
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def _resume(self) -> bool:
        """Restore the newest checkpoint, if any; True when one was restored."""
        ckpt = find_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        state = load_state(ckpt, map_location=self.device)
        if state.get("kind") != MODEL_KIND:
            raise CheckpointError(f"checkpoint {ckpt} is not a standalone IMM checkpoint")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {ckpt} does not fit this model: {first_line(exc)}"
            ) from exc
        self.step = int(state["step"])
        self.wall_seconds = float(state["wall_seconds"])
        set_rng_state(state["rng"], self.np_rng)
        return True

    def save(self) -> Path:
        """Checkpoint model, optimiser, counters and RNGs (resumable) at the current step."""
        state = {
            "kind": MODEL_KIND,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_config": C.to_dict(self.cfg.model),
            "image_size": self.cfg.image_size,
            "frame_size": int(self.data.image_size),  # the dataset's frames, which training centre-crops
            "landmark_names": list(self.data.landmark_names),
            "step": self.step,
            "wall_seconds": self.wall_seconds + self._elapsed(),
            "rng": rng_state(self.np_rng),
        }
        return save_checkpoint(self.run_dir, self.step, state, None)

    # ------------------------------------------------------------------------------------------------- loop
    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        source, target = self.train_pairs.sample(cfg.batch_size, self.np_rng)
        frames = self.data.frames
        windows = crop_windows(
            frames.shape[1], frames.shape[2], cfg.image_size, cfg.batch_size,
            self.np_rng if cfg.augmentation == "crop" else None,
        )  # fmt: skip
        return (
            crop_frames(frames, source, windows, cfg.image_size).to(self.device, non_blocking=True),
            crop_frames(frames, target, windows, cfg.image_size).to(self.device, non_blocking=True),
        )

    def validation_loss(self) -> float:
        """Mean reconstruction MSE over the fixed validation pairs (centre crops)."""
        return pairs_loss(
            self.model, self.data.frames, self.val_source, self.val_target, self.device, self._autocast
        )

    def _evaluate(self) -> dict[str, float]:
        row: dict[str, Any] = {"step": self.step, "val_loss": self.validation_loss()}
        if self.data.landmark_names:  # a Gymnasium env has no ground truth: no landmark error, none faked
            self._landmark_errors(row)
        row["wall_hours"] = round((self.wall_seconds + self._elapsed()) / 3600, 5)
        self.logger.log_eval(row)
        return row

    def _landmark_errors(self, row: dict[str, Any]) -> None:
        try:
            row.update(
                landmark_report(self.model, self.data, self.split, self.device, REGRESSION_TRAIN_FRAMES)
            )
        except ValueError as exc:  # too few visible landmarks to fit: report the loss alone
            self.logger.print(f"landmark regression skipped: {exc}")

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0

    def run(self) -> dict[str, Any]:
        """Train to ``cfg.steps`` updates (evaluating, logging and checkpointing on schedule); write the figures.

        Returns a summary dict (last validation row, run dir)."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        speed = Throughput(self.step)
        losses: list[torch.Tensor] = []
        separations: list[torch.Tensor] = []
        last_eval: dict[str, Any] = {}
        self.model.train()
        if self.step == 0:
            last_eval = self._evaluate()
        while self.step < cfg.steps:
            source, target = self._batch()
            with self._autocast():
                loss, parts = self.model.training_loss(source, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            losses.append(parts["reconstruction"].detach())
            if "separation" in parts:
                separations.append(parts["separation"].detach())
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                # One host sync per log line, not per update (it would stall a GPU).
                mean_loss = float(torch.stack(losses).float().mean())
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"IMM loss became {mean_loss} by step {self.step}; try a lower --lr")
                rate = speed.update(self.step)
                row = {"step": self.step, "loss": mean_loss}
                if separations:
                    row["separation_loss"] = float(torch.stack(separations).mean())
                row["pairs_per_second"] = round(rate * cfg.batch_size, 2)
                row["wall_hours"] = round((self.wall_seconds + self._elapsed()) / 3600, 5)
                self.logger.log_train(row)
                self.logger.print(
                    f"step {self.step}/{cfg.steps}  loss {mean_loss:.5f}  {rate:.2f} updates/s"
                    f"  eta {format_seconds((cfg.steps - self.step) / rate if rate > 0 else None)}"
                )
                losses, separations = [], []
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                last_eval = self._evaluate()
                errors = [f"{k.split('/', 1)[1]} {v:.2f}" for k, v in last_eval.items() if k.startswith("error/")]
                landmarks = (f"landmark error (px) {', '.join(errors)}" if self.data.landmark_names and errors
                             else "landmark error unavailable (no landmarks)")  # fmt: skip
                self.logger.print(f"eval step {self.step}  val_loss {last_eval['val_loss']:.5f}  {landmarks}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                if losses and not bool(torch.isfinite(torch.stack(losses)).all()):
                    raise TrainingError(
                        f"IMM loss became non-finite before step {self.step}; try a lower --lr"
                    )
                self.save()
        self.logger.close()
        figures = self.write_figures()
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            **last_eval,
            "figures": [str(f) for f in figures],
        }

    def write_figures(self) -> list[Path]:
        """The IMM example, score-map and loss-curve figures of the current model into RUN_DIR/figures/."""
        offsets = (self.cfg.min_offset, self.cfg.max_offset)
        return write_imm_figures(self.model, self.data, self.split, self.run_dir, self.cfg.seed, offsets=offsets)


def train_imm(cfg: C.IMMTrainConfig, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) a standalone IMM run; see :class:`IMMTrainer`."""
    return IMMTrainer(cfg, quiet=quiet).run()
