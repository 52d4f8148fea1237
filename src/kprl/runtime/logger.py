"""Run logging: CSV files (always), TensorBoard events, and a console progress line.

TensorBoard also gets the run's config (text, and its options with the final return in the HPARAMS tab), the frames
of each evaluation video and each IMM example figure as images. CSV rows are keyed by ``env_step``. On resume,
:meth:`CSVLog.truncate_after` drops rows written after the checkpoint being resumed, so a killed and rerun training
has no duplicated or missing rows; TensorBoard gets the same treatment through ``purge_step``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np

from kprl.errors import ConfigError
from kprl.runtime.files import atomic_write_text
from kprl.runtime.progress import Console


class CSVLog:
    """An append-only CSV whose columns grow when a row brings new keys (the file is then rewritten)."""

    def __init__(self, path: Path, key: str = "env_step") -> None:
        self.path = Path(path)
        self.key = key
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [dict(r) for r in reader if r.get(key) not in (None, "")]

    def truncate_after(self, step: int) -> None:
        """Drop rows whose key column (``env_step``) exceeds ``step`` (work after the resumed checkpoint)."""
        kept = [r for r in self.rows if int(float(r[self.key])) <= step]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._rewrite()

    def _rewrite(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        formatted = {k: _fmt(v) for k, v in row.items()}
        new = [k for k in formatted if k not in self.columns]
        self.rows.append(formatted)
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(formatted)
            f.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class WandbSink:
    """Weights & Biases as one more place rows go (optional: ``pip install 'kprl[wandb]'``, ``--wandb``).

    The W&B run id is kept in ``RUN_DIR/wandb_id``, so a resumed kprl run continues the same W&B run; its files go
    to ``RUN_DIR/wandb/``. ``WANDB_MODE=offline`` (no network) and the other WANDB_* variables work as usual. W&B
    refuses steps below the last one it saw: after a kill, the stretch redone from the checkpoint keeps the rows
    the killed attempt had already sent (the CSV files are the exact record)."""

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any], name: str | None = None) -> None:
        try:  # W&B is optional (kprl[wandb]): imported only when --wandb
            import wandb
        except ImportError as exc:

            raise ConfigError("--wandb needs Weights & Biases: pip install 'kprl[wandb]'") from exc
        id_file = Path(run_dir) / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        if not id_file.is_file():
            atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(project=project, id=run_id, resume="allow", dir=str(run_dir), config=config,
                              name=name or Path(run_dir).name)  # fmt: skip

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class RunLogger:
    """Writes ``train.csv``, ``eval.csv`` and TensorBoard events of one run (and, optionally, W&B); prints progress
    lines.

    Rows are keyed by the column ``key`` (agents: ``env_step``; standalone IMM: ``step``, its update count)."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int,
        tensorboard: bool = True,
        quiet: bool = False,
        key: str = "env_step",
        wandb: WandbSink | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.key = key
        self.train_csv = CSVLog(self.run_dir / "train.csv", key)
        self.eval_csv = CSVLog(self.run_dir / "eval.csv", key)
        self.train_csv.truncate_after(resume_step)
        self.eval_csv.truncate_after(resume_step)
        self.quiet = quiet
        self.console = Console(quiet)
        self.wandb = wandb
        self.writer = None
        if tensorboard:
            # Imported only when TensorBoard logging is on: tensorboard takes seconds to import.
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events written after the checkpoint by a killed earlier attempt; the checkpoint's own
            # step was logged before it was saved, so it stays. resume_step -1 (no checkpoint) purges everything.
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step + 1)

    def scalars(self, values: dict[str, float], env_step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, env_step)
        if self.wandb is not None:
            self.wandb.log(values, env_step)

    def log_train(self, row: dict[str, Any]) -> None:
        self.train_csv.append(row)
        self.scalars({k if "/" in k else f"train/{k}": v for k, v in row.items() if k != self.key}, row[self.key])

    def log_eval(self, row: dict[str, Any]) -> None:
        self.eval_csv.append(row)
        self.scalars({k if "/" in k else f"eval/{k}": v for k, v in row.items() if k != self.key}, row[self.key])
        if self.writer is not None:
            self.writer.flush()

    def config(self, config: dict[str, Any]) -> None:
        """The run's resolved config as TensorBoard text (``config``), readable beside the curves."""
        if self.writer is not None:
            text = json.dumps(config, indent=2, sort_keys=True, default=str)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def hparams(self, options: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's options and final metrics in TensorBoard's HPARAMS tab, where runs can be compared."""
        if self.writer is not None:
            allowed = (bool, int, float, str)
            values = {k: v if isinstance(v, allowed) else str(v) for k, v in options.items()}
            self.writer.add_hparams(values, metrics, run_name=".")

    def image_file(self, tag: str, path: Path, step: int) -> None:
        """A PNG written by the run (e.g. the IMM example figure) as a TensorBoard image."""
        if self.writer is not None and Path(path).is_file():
            image = np.asarray(imageio.imread(path))[..., :3]
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def video_frames(self, tag: str, path: Path, step: int, frames: int = 8) -> None:
        """``frames`` evenly spaced frames of an mp4 the run wrote, side by side, as a TensorBoard image
        (TensorBoard's own video support needs moviepy; the mp4 itself stays in the run directory)."""
        if self.writer is None or not Path(path).is_file():
            return
        with imageio.get_reader(path) as reader:
            video = np.stack([np.asarray(f)[..., :3] for f in reader])
        picks = np.linspace(0, len(video) - 1, min(frames, len(video))).round().astype(int)
        self.writer.add_image(tag, np.concatenate(list(video[picks]), axis=1), step, dataformats="HWC")

    def print(self, message: str) -> None:
        self.console.line(message)

    def close(self) -> None:
        self.console.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


class Throughput:
    """Env steps (or updates) per second over a sliding window of calls, for the console line."""

    def __init__(self, start_step: int) -> None:
        self.t0 = time.perf_counter()
        self.s0 = start_step
        self.window: list[tuple[float, int]] = [(self.t0, start_step)]

    def update(self, env_step: int) -> float:
        now = time.perf_counter()
        self.window.append((now, env_step))
        self.window = self.window[-20:]
        (t_a, s_a), (t_b, s_b) = self.window[0], self.window[-1]
        return (s_b - s_a) / max(t_b - t_a, 1e-9)
