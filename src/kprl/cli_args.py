"""Command-line options into typed config dataclasses (tyro), with parse errors as one line instead of a box."""

from __future__ import annotations

import contextlib
import io
from typing import TypeVar

import tyro

from kprl.errors import KprlError

T = TypeVar("T")
TYRO_CONFIG = (tyro.conf.OmitArgPrefixes, tyro.conf.FlagConversionOff)


def parse(cls: type[T], args: list[str], prog: str, default: T | None = None) -> T:
    """Parse ``args`` into ``cls`` with tyro; a parse error becomes one ``KprlError`` line (not tyro's box)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
            return tyro.cli(cls, args=args, default=default, prog=prog, config=TYRO_CONFIG)
    except SystemExit as exc:
        text = buffer.getvalue()
        if not exc.code:  # --help: show tyro's text as it is
            print(text, end="")
            raise
        lines = []
        for raw in text.splitlines():
            line = raw.strip().strip("│╭╮╰╯─ ").strip()
            if line.startswith("For full helptext"):
                break
            if line and not set(line) <= set("─━-"):
                lines.append(line)
        raise KprlError(" ".join(lines[1:] if len(lines) > 1 else lines) + f" (see {prog} --help)") from None
