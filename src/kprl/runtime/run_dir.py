"""Claiming an output directory for a run, a sweep or an IMM training: create it, or check that an existing one
asks for the same thing (so rerunning the same command resumes, and another command never mixes into it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kprl import config as C
from kprl.errors import ConfigError


def claim_dir(
    directory: Path,
    record: str,
    wanted: dict[str, Any],
    read_stored: Callable[[Path], dict[str, Any]],
    clash: str,
    empty_needed: str,
) -> bool:
    """Create ``directory``, or check that the ``record`` file (e.g. ``config.json``) it holds asks for ``wanted``
    (read by ``read_stored``; resumable fields are not differences, `kprl.config.config_differences`). True when
    the record existed.

    A one-line ConfigError when it asks for something else (``clash``, formatted with ``shown``: the first
    differences) or when the directory holds other files (``empty_needed``)."""
    directory = Path(directory)
    path = directory / record
    if path.is_file():
        diffs = C.config_differences(read_stored(path), wanted)
        if diffs:
            shown = ", ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")
            raise ConfigError(f"{directory} {clash.format(shown=shown)}")
        return True
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} {empty_needed}")
    directory.mkdir(parents=True, exist_ok=True)
    return False


def prepare_run_dir(cfg: Any) -> Path:
    """Create ``cfg.run_dir``, or check that an existing one holds the same config (a :class:`C.TrainConfig` or
    :class:`C.IMMTrainConfig`, resumable fields aside); write ``config.json``."""
    run_dir = Path(cfg.run_dir)
    claim_dir(
        run_dir,
        "config.json",
        C.to_dict(cfg),
        lambda path: C.to_dict(C.load_json(type(cfg), path)),
        clash="holds a run with a different config ({shown}); use another --run-dir to start a new run",
        empty_needed="exists, is not empty and holds no kprl run; use another --run-dir",
    )
    C.save_json(cfg, run_dir / "config.json")
    return run_dir
