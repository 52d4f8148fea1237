"""Pinned copies of the kprl code: a grid job always runs, and resumes, with the code it started with.

``pin_code(home)`` copies the ``kprl`` package that is running into ``HOME/code/<id>/kprl``, where ``<id>`` is the
kprl version and a hash of the package's files, so identical code is stored once; ``PROVENANCE.json`` beside it
records the git commit it came from (:func:`kprl.runtime.provenance.code_version`), which a copy outside git cannot tell by
itself. A job runs ``python -m kprl`` with that folder first on ``PYTHONPATH``; editing or updating the checkout
afterwards changes nothing for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import kprl
from kprl.runtime.files import atomic_write_text
from kprl.runtime.provenance import PINNED_RECORD as PROVENANCE_FILE
from kprl.runtime.provenance import code_version

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def _package_files(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def code_id(package: Path | None = None) -> str:
    """``<kprl version>-<12 hex digits>``: the version and a SHA-256 of the package's file names and contents."""
    package = Path(kprl.__file__).parent if package is None else package
    digest = hashlib.sha256()
    for path in _package_files(package):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{kprl.__version__}-{digest.hexdigest()[:12]}"


def pin_code(home: Path, package: Path | None = None) -> Path:
    """The folder to put on ``PYTHONPATH`` to run the code that is running now; copied on first use."""
    package = Path(kprl.__file__).parent if package is None else package
    target = Path(home) / "code" / code_id(package)
    if (target / PROVENANCE_FILE).is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(package, staging / "kprl", ignore=_SKIP)
    atomic_write_text(staging / PROVENANCE_FILE, json.dumps(code_version(package), indent=1) + "\n")
    if target.exists():  # a concurrent pin of the same code finished first
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return target


def pinned_provenance(pythonpath: Path) -> dict[str, Any]:
    """What :func:`pin_code` recorded for a pinned folder; for a folder without the record, what git says of it."""
    record = Path(pythonpath) / PROVENANCE_FILE
    if record.is_file():
        return json.loads(record.read_text())
    return code_version(Path(pythonpath) / "kprl")
