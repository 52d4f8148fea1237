"""Figures of a standalone IMM run (``kprl imm train`` writes them at the end; ``kprl imm figure`` redraws them).

Into ``RUN_DIR/figures/``:

- ``imm_example.png``: the poster's "IMM example", as in Jakab et al. 2018 (Fig. 1): for validation pairs, the
  source frame the generator sees, the target frame with the keypoints KeyNet found in it, and the generator's
  rendering of the target from the source and those keypoints.
- ``score_maps.png``: for the first pair, each keypoint's score map with the softmax marginals over columns (above)
  and rows (right) whose expectations are the keypoint (Jakab et al. 2018, Sec. 3.1, Eq. 1-2).
- ``gaussian_maps.png``: each keypoint's Gaussian map, the generator's only view of the target, and all of them
  over the target frame.
- ``loss_curve.png``: training and validation loss, and the landmark regression error when logged.

Keypoint k has the same colour (and number k + 1) in every figure. Figures are drawn with matplotlib's Agg
backend (no display) and each PNG is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kprl.config import IMMTrainConfig
from kprl.data.frames import FrameDataset, load_dataset
from kprl.errors import ConfigError, DataError
from kprl.imm.checkpoint import EpisodeSplit, load_imm, read_run_config, read_split
from kprl.imm.pairs import PairSampler, crop_frames, crop_windows
from kprl.nets.imm import IMM, IMMOutput, KeypointOutput
from kprl.nets.keypoints import gaussian_maps, to_pixels
from kprl.rl.representations import IMMObjective
from kprl.rl.sac import SACAgent
from kprl.runtime.files import atomic_write_bytes
from kprl.viz.curves import read_csv
from kprl.viz.keypoints import newest_frame_keypoints

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


FIGURES_DIR = "figures"
DPI = 110
MAX_COLUMNS = 5
# Pairs are drawn as the run trained on them; without its config, as `kprl imm train` draws them by default.
DEFAULT_OFFSETS = (IMMTrainConfig.min_offset, IMMTrainConfig.max_offset)


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    # matplotlib is imported on the first figure, on the Agg backend: importing kprl leaves a notebook's backend alone.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    return plt


def _keypoint_colours(k: int) -> list[tuple[float, float, float, float]]:
    """K distinct RGBA colours, the same for keypoint i in every figure (tab10, then tab20, then a hue wheel)."""
    import matplotlib  # on first use, as in _pyplot


    if k <= 20:
        cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
        return [tuple(float(c) for c in cmap(i)) for i in range(k)]  # listed colormaps: integer i = colour i
    cmap = matplotlib.colormaps["hsv"]
    return [tuple(float(c) for c in cmap(i / k)) for i in range(k)]


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    """A [3, H, W] frame (uint8 0..255, or float in [0, 1]) -> HWC float array in [0, 1] for imshow."""
    image = tensor.detach().cpu().float()
    if tensor.dtype == torch.uint8:
        image = image / 255.0
    return image.clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to PNG bytes, write them atomically to ``path`` and close the figure."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        atomic_write_bytes(path, buf.getvalue())
    finally:
        _pyplot().close(fig)
    return path


def _grid(plt: Any, panels: int, panel_size: float = 2.4) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes in rows of up to MAX_COLUMNS; unused axes are hidden."""
    cols = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(panel_size * cols, 5.0), (panel_size + 0.4) * rows + 0.6), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.set_axis_off()
    return fig, flat[:panels]


def _mark_keypoints(ax: Axes, points: np.ndarray, colours: list[Any], size: float = 40.0) -> None:
    """Numbered markers at ``points`` [K, 2] (x, y) in the axes' data coordinates."""
    for i, (x, y) in enumerate(points):
        ax.scatter([x], [y], s=size, color=colours[i], edgecolors="white", linewidths=0.8, zorder=3)
        ax.annotate(
            str(i + 1),
            (x, y),
            xytext=(4, 3),
            textcoords="offset points",
            color=colours[i],
            fontsize=8,
            fontweight="bold",
            zorder=4,
        )


def _map_cells(coords: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Keypoints [K, 2] in [-1, 1] -> (column, row) cell coordinates of an h x w map under imshow's default extent
    (cell centres at integers): -1 is the first cell's centre, +1 the last's (kprl.nets.keypoints)."""
    x = (coords[:, 0] + 1.0) / 2.0 * (width - 1)
    y = (coords[:, 1] + 1.0) / 2.0 * (height - 1)
    return torch.stack([x, y], dim=-1).numpy()


def _run_model(
    model: IMM, data: FrameDataset, split: EpisodeSplit, seed: int, examples: int, offsets: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, IMMOutput]:
    """``examples`` centre-cropped validation pairs (uint8 [B, 3, S, S] source and target) and the model's output
    on them (float32, CPU). The model runs in eval mode without gradients; its train/eval mode is restored."""
    try:
        sampler = PairSampler(data.episode, np.asarray(split.val), max_offset=offsets[1], min_offset=offsets[0])
    except ValueError as exc:
        raise DataError(f"validation episodes {np.asarray(split.val).tolist()}: {exc}") from exc
    size = model.image_size
    # Prefer pairs whose target shows every landmark (a cartpole frame with the cart out of view says little).
    source_idx, target_idx = sampler.sample(16 * examples, np.random.default_rng(seed))
    shift = (data.frames.shape[1] - size) // 2
    target_landmarks = np.asarray(data.landmarks)[target_idx] - shift
    in_view = ((target_landmarks >= 0) & (target_landmarks < size)).all(axis=(1, 2))
    order = np.argsort(~in_view, kind="stable")[:examples]
    source_idx, target_idx = source_idx[order], target_idx[order]
    windows = crop_windows(data.frames.shape[1], data.frames.shape[2], size, examples, rng=None)
    source = crop_frames(data.frames, source_idx, windows, size)
    target = crop_frames(data.frames, target_idx, windows, size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(source.to(device), target.to(device))
    finally:
        model.train(was_training)
    keypoints = KeypointOutput(*(t.detach().float().cpu() for t in out.keypoints))
    return source, target, IMMOutput(out.generated.detach().float().cpu(), keypoints)


def _example_figure(
    source: torch.Tensor,
    target: torch.Tensor,
    out: IMMOutput,
    path: Path,
    image_coords: torch.Tensor,
    title: str | None = None,
) -> Path:
    """The IMM example (Jakab et al. 2018, Fig. 1): source, target with keypoints, generated target; one row each.

    ``source``/``target`` uint8 [N, 3, H, W], ``out.generated`` [N, 3, H, W] in [-0.5, 0.5], ``image_coords``
    [N, K, 2] the target's keypoints in [-1, 1] of the image (`ConvTrunk.image_coords`); ``title`` replaces the
    default suptitle."""
    plt = _pyplot()
    count, _, height, width = target.shape
    colours = _keypoint_colours(image_coords.shape[1])
    points = to_pixels(image_coords, width, height).numpy()
    fig, axes = plt.subplots(count, 3, figsize=(7.2, 2.4 * count + 0.3), squeeze=False)
    # Pixel corners: pixel (i, j) covers [i, i+1] x [j, j+1], the convention of to_pixels.
    extent = (0, width, height, 0)
    titles = ("input (source)", "target + keypoints", "generated target")
    for row in range(count):
        generated = (out.generated[row] + 0.5).clamp(0.0, 1.0)
        for col, image in enumerate((source[row], target[row], generated)):
            ax = axes[row, col]
            ax.imshow(_to_image(image), extent=extent, interpolation="nearest")
            if col == 1:
                _mark_keypoints(ax, points[row], colours)
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=10)
    fig.suptitle(
        title or "IMM: the generator draws the target from the source and the target's keypoints", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def _score_map_figure(kp: KeypointOutput, path: Path) -> Path:
    """Score maps of the first example with their softmax marginals (Jakab et al. 2018, Eq. 1-2) and keypoints."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable  # matplotlib's: imported with it, on first use

    plt = _pyplot()
    k, height, width = kp.score_maps.shape[1:]
    colours = _keypoint_colours(k)
    cells = _map_cells(kp.coords[0], height, width)
    fig, axes = _grid(plt, k, panel_size=2.8)
    for i, ax in enumerate(axes):
        ax.imshow(kp.score_maps[0, i].numpy(), cmap="viridis", interpolation="nearest")
        ax.plot(*cells[i], marker="+", markersize=12, markeredgewidth=2.5, color="white")
        ax.plot(*cells[i], marker="+", markersize=10, markeredgewidth=1.2, color=colours[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"keypoint {i + 1}", color=colours[i], fontsize=9, fontweight="bold")
        divider = make_axes_locatable(ax)
        top = divider.append_axes("top", size="22%", pad=0.04, sharex=ax)
        top.bar(np.arange(width), kp.marginal_x[0, i].numpy(), width=1.0, color=colours[i])
        right = divider.append_axes("right", size="22%", pad=0.04, sharey=ax)
        right.barh(np.arange(height), kp.marginal_y[0, i].numpy(), height=1.0, color=colours[i])
        for side in (top, right):
            side.tick_params(labelbottom=False, labelleft=False, bottom=False, left=False, labelsize=6)
            for spine in ("top", "right"):
                side.spines[spine].set_visible(False)
    fig.suptitle(
        "KeyNet score maps (Jakab et al. 2018)\nwith their softmax marginals over columns (top) and rows (right)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def _gaussian_figure(
    target: torch.Tensor, kp: KeypointOutput, path: Path, image_coords: torch.Tensor, image_sigma: float
) -> Path:
    """Gaussian maps of the first example's keypoints, and all of them over its target frame."""
    plt = _pyplot()
    k, height, width = kp.gauss_maps.shape[1:]
    size = target.shape[-1]
    colours = _keypoint_colours(k)
    cells = _map_cells(kp.coords[0], height, width)
    fig, axes = _grid(plt, k + 1)
    for i, ax in enumerate(axes[:k]):
        ax.imshow(kp.gauss_maps[0, i].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.plot(*cells[i], marker="+", markersize=10, markeredgewidth=1.2, color=colours[i])
        ax.set_title(f"keypoint {i + 1}", color=colours[i], fontsize=9, fontweight="bold")
        ax.set_xticks([])
        ax.set_yticks([])
    # The maps cover only the receptive-field centres of the image, so they are redrawn at image resolution where
    # their cells look (image coordinates, width scaled alike) rather than stretched over the whole image.
    resized = gaussian_maps(image_coords[:1].float(), size, size, image_sigma)[0]
    strength, owner = resized.max(dim=0)
    overlay = np.asarray(colours)[owner.numpy()]
    overlay[..., 3] = 0.75 * strength.clamp(0.0, 1.0).numpy()
    ax = axes[k]
    extent = (0, size, size, 0)
    ax.imshow(_to_image(target[0]), extent=extent, interpolation="nearest")
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    _mark_keypoints(ax, to_pixels(image_coords[0], size, size).numpy(), colours, size=20.0)
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_title("target + all maps", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle("Gaussian maps of the keypoints:\nwhat the generator reads", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _series(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    """(step, value) pairs of a CSV column, skipping rows where either is empty or not a finite number."""
    steps, values = [], []
    for row in rows:
        try:
            step, value = float(row["step"]), float(row[column])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(step) and math.isfinite(value):
            steps.append(step)
            values.append(value)
    return steps, values


def _loss_figure(run_dir: Path, path: Path) -> Path | None:
    """Training/validation loss (log scale) and landmark errors vs update step; None without train.csv rows."""
    train_rows = read_csv(run_dir / "train.csv")
    train_steps, train_loss = _series(train_rows, "loss")
    if not train_steps:
        return None
    eval_rows = read_csv(run_dir / "eval.csv")
    error_columns = sorted({c for row in eval_rows for c in row if c and c.startswith("error/")})
    error_columns = [c for c in error_columns if _series(eval_rows, c)[0]]
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, 2 if error_columns else 1, figsize=(11 if error_columns else 6, 4), squeeze=False
    )
    ax = axes[0, 0]
    positive = [(s, v) for s, v in zip(train_steps, train_loss, strict=True) if v > 0]
    if positive:
        ax.plot(*zip(*positive, strict=True), color="C0", lw=1, label="train")
    val_steps, val_loss = _series(eval_rows, "val_loss")
    val = [(s, v) for s, v in zip(val_steps, val_loss, strict=True) if v > 0]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="C1", ms=3, label="validation")
    if positive or val:
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("update step")
    ax.set_ylabel("reconstruction MSE")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3, which="both")
    if error_columns:
        ax = axes[0, 1]
        for i, column in enumerate(c for c in error_columns if c != "error/mean"):
            ax.plot(
                *_series(eval_rows, column),
                "o-",
                ms=2,
                lw=1,
                color=f"C{i % 10}",
                label=column[len("error/") :],
            )
        if "error/mean" in error_columns:
            ax.plot(*_series(eval_rows, "error/mean"), "o-", ms=3, lw=2, color="black", label="mean")
        ax.set_xlabel("update step")
        ax.set_ylabel("landmark error (pixels)")
        ax.set_title("held-out landmark regression from keypoints", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def write_imm_figures(
    model: IMM, data: FrameDataset, split: EpisodeSplit, run_dir: Path, seed: int, examples: int = 4,
    offsets: tuple[int, int] = DEFAULT_OFFSETS,
) -> list[Path]:
    """Write RUN_DIR/figures/{imm_example.png, score_maps.png, gaussian_maps.png, loss_curve.png}; return the paths.

    The examples are ``examples`` pairs of validation frames (seeded by ``seed``; pairs whose target shows every
    landmark come first), ``offsets`` (min, max) agent steps apart as in training, centre-cropped to the model's
    input size. ``loss_curve.png`` is skipped when RUN_DIR/train.csv is missing or empty."""
    if examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    run_dir = Path(run_dir)
    out_dir = run_dir / FIGURES_DIR
    source, target, out = _run_model(model, data, split, seed, examples, offsets)
    trunk = model.keynet.trunk
    image_coords = trunk.image_coords(out.keypoints.coords)
    paths = [
        _example_figure(source, target, out, out_dir / "imm_example.png", image_coords),
        _score_map_figure(out.keypoints, out_dir / "score_maps.png"),
        _gaussian_figure(
            target, out.keypoints, out_dir / "gaussian_maps.png", image_coords, model.cfg.sigma * trunk.image_scale
        ),
    ]
    loss = _loss_figure(run_dir, out_dir / "loss_curve.png")
    return paths + ([loss] if loss is not None else [])


def _agent_imm_output(
    agent: SACAgent, source_obs: np.ndarray | torch.Tensor, target_obs: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, IMMOutput]:
    """Run an agent's own IMM on observation pairs: the centre crops the network sees (uint8 [N, C, S, S]) of
    source and target, the generated target stacks and the target's keypoints (float32, CPU).

    The keypoints are those the IMM loss uses (`kprl.rl.representations.IMMObjective`): the keypoint head on
    the critic encoder's maps of the target; the GenNet renders the target from the source and their Gaussian
    maps. Runs without gradients in eval mode (the agent's mode is restored)."""
    objective = next((o for o in agent.objectives if isinstance(o, IMMObjective)), None)
    if objective is None:
        raise ValueError("the agent has no IMM objective (agents sac_ae_imm and sac_imm have one)")
    source = agent.augmentation.for_acting(torch.as_tensor(source_obs).to(agent.device))
    target = agent.augmentation.for_acting(torch.as_tensor(target_obs).to(agent.device))
    was_training = agent.critic.training
    agent.train(False)
    try:
        with torch.no_grad(), agent.autocast():
            keypoints = objective._head[0].keypoints(agent.critic.encoder.trunk(target))
            generated = objective.gennet(source, keypoints.gauss_maps)
    finally:
        agent.train(was_training)
    keypoints = KeypointOutput(*(t.detach().float().cpu() for t in keypoints))
    return source.cpu(), target.cpu(), IMMOutput(generated.detach().float().cpu(), keypoints)


def write_agent_imm_figure(
    agent: SACAgent, source_obs: np.ndarray | torch.Tensor, target_obs: np.ndarray | torch.Tensor, path: Path
) -> Path:
    """The poster's "IMM example from SAC+AE+IMM": the IMM example figure of a keypoint agent's own IMM.

    ``source_obs``/``target_obs`` are uint8 observation stacks [N, C, H, W] as the env returns them (N examples;
    typically observations ``imm_target_offset`` steps apart in one episode). Row n shows, in the centre crop the
    network sees, the newest frame of the source, the newest frame of the target with its keypoints (per-frame
    keypoints: the newest frame's; colours as every IMM figure) and the newest frame of the generated target stack
    (channels -3:). Written atomically as PNG to ``path``; returns ``path``. A ValueError for an agent without an
    IMM objective or mismatched inputs."""
    source_obs, target_obs = torch.as_tensor(source_obs), torch.as_tensor(target_obs)
    if source_obs.dtype != torch.uint8 or target_obs.dtype != torch.uint8:
        raise ValueError("source and target observations must be uint8")
    if source_obs.dim() != 4 or source_obs.shape != target_obs.shape or len(source_obs) == 0:
        raise ValueError(
            f"source and target must be non-empty [N, C, H, W] of one shape, got {tuple(source_obs.shape)} "
            f"and {tuple(target_obs.shape)}"
        )
    source, target, out = _agent_imm_output(agent, source_obs, target_obs)
    coords = newest_frame_keypoints(agent, out.keypoints.coords)
    shown = IMMOutput(out.generated[:, -3:], out.keypoints._replace(coords=coords))
    image_coords = agent.critic.encoder.trunk.image_coords(coords)
    title = "The agent's IMM: it draws the target from the source and the target's keypoints (newest frames)"
    return _example_figure(source[:, -3:], target[:, -3:], shown, Path(path), image_coords, title=title)


def figures_from_run(run_dir: Path, data_dir: Path | None = None, device: str = "cpu") -> list[Path]:
    """`kprl imm figure`: load the newest checkpoint of RUN_DIR (kprl.imm.checkpoint.load_imm), the dataset (data_dir or
    the run's config.json `data`), the split (RUN_DIR/split.json: {"train": [...], "val": [...]}) and the seed
    (config.json `seed`), and write the figures."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    split = read_split(run_dir)
    loaded = load_imm(run_dir, device)
    data = load_dataset(Path(data_dir) if data_dir is not None else Path(cfg.data))
    if data.image_size < loaded.image_size:
        raise ConfigError(
            f"the model takes {loaded.image_size} px frames; the dataset's frames are {data.image_size} px"
        )
    return write_imm_figures(loaded.model, data, split, run_dir, int(cfg.seed), offsets=(cfg.min_offset, cfg.max_offset))
