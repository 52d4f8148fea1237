"""Which code a run ran: the kprl version and, from a git checkout, the commit and whether it had local changes;
and the ``runtime.jsonl`` line each (re)start of a run appends with it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import kprl

GIT_TIMEOUT_S = 5.0
_HEX_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1, or SHA-256 object names
# The record of the commit a pinned copy of the package came from, written beside it by kprl.grid.code.
PINNED_RECORD = "PROVENANCE.json"
# Variables that would point git at another repository than the one around the package (set inside git hooks).
_GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


def _git(source: Path, *args: str) -> str | None:
    """Stdout of ``git args`` run in ``source``; None where git is missing, fails or takes too long."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take the index lock from a concurrent git command
    try:
        done = subprocess.run(["git", *args], cwd=source, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _pinned_record(source: Path) -> dict[str, Any]:
    """The git commit recorded beside a pinned copy of the package (``kprl grid`` runs jobs from such copies, see
    :mod:`kprl.grid.code`): ``{"git_commit", "git_dirty"}``, or nothing where there is no valid record."""
    try:
        stored = json.loads((source.parent / PINNED_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    commit = stored.get("git_commit") if isinstance(stored, dict) else None
    if not isinstance(commit, str) or not _HEX_ID.fullmatch(commit):
        return {}
    return {"git_commit": commit, "git_dirty": stored.get("git_dirty")}


def code_version(source: Path | None = None) -> dict[str, Any]:
    """``{"kprl_version", "git_commit", "git_dirty"}`` of the code in ``source`` (default: the kprl package that
    runs). ``git_commit`` is the checkout's HEAD (40 hex digits; 64 in a SHA-256 repository) and ``git_dirty`` whether tracked files differ from
    it (untracked files do not count); both are None where git is missing or the package is not a tracked part of a
    git checkout (an installed wheel, even one inside some repository's virtual environment). Never raises."""
    source = Path(kprl.__file__).parent if source is None else Path(source)
    record: dict[str, Any] = {"kprl_version": kprl.__version__, "git_commit": None, "git_dirty": None}
    if not source.is_dir() or _git(source, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return {**record, **_pinned_record(source)}
    commit = (_git(source, "rev-parse", "--verify", "HEAD") or "").strip()
    if not _HEX_ID.fullmatch(commit):
        return record
    status = _git(source, "status", "--porcelain", "--untracked-files=no")
    record["git_commit"] = commit
    record["git_dirty"] = None if status is None else bool(status.strip())
    return record


def record_start(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Append one line to ``run_dir/runtime.jsonl`` for this start or resume of a run and return it: when it started,
    ``fields`` (where and how it runs: the caller's step counter, machine, device, threads, precision...), and the
    code (:func:`code_version`). A run's config.json holds the options of its latest start; this file keeps every
    start's, so a resume with other execution options (threads, device) never hides how the run trained."""
    record = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields, **code_version()}
    with open(Path(run_dir) / "runtime.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record
