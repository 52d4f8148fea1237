"""Command-line options into typed config dataclasses (tyro), with parse errors as one line instead of a box.

Boolean options are flags as users type them (``--wandb``, ``--no-video``); the spelled-out ``--video False`` of
earlier versions is still accepted, so scripts and grid files written for those keep working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import typing
from typing import TypeVar

import tyro

from kprl.errors import KprlError

T = TypeVar("T")
TYRO_CONFIG = (tyro.conf.OmitArgPrefixes,)
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
# Whatever frame or colours tyro draws around an error: box-drawing characters and ANSI escape sequences.
_DECORATION = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\u2500-\u257f]")


def bool_flags(cls: type) -> set[str]:
    """The flag names (``wandb``, ``rl-trains-encoder``) of every boolean option of a config dataclass, nested
    dataclasses included (their options carry no prefix on the command line)."""
    names: set[str] = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if kind is bool:
            names.add(field.name.replace("_", "-"))
        elif dataclasses.is_dataclass(kind):
            names |= bool_flags(kind)  # type: ignore[arg-type]
    return names


def with_bare_flags(args: list[str], flags: set[str]) -> list[str]:
    """``args`` with ``--flag True|False`` (or ``--flag=true``) written as ``--flag`` / ``--no-flag``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg[2:].partition("=")
        if arg.startswith("--") and name in flags:
            if not eq and i + 1 < len(args) and args[i + 1].lower() in _TRUE + _FALSE:
                value, i = args[i + 1], i + 1
            if value.lower() in _FALSE:
                arg = f"--no-{name}"
            elif value.lower() in _TRUE:
                arg = f"--{name}"
        out.append(arg)
        i += 1
    return out


def one_line(text: str) -> str:
    """tyro's error text as one line: decoration dropped, lines joined, the title and its --help footer left out."""
    lines = []
    for raw in _DECORATION.sub("", text).splitlines():
        line = raw.strip()
        if line.startswith("For full helptext"):
            break
        if re.search(r"\w", line):  # rules drawn with dashes or other punctuation carry no words
            lines.append(line)
    return " ".join(lines[1:] if len(lines) > 1 else lines)


def parse(cls: type[T], args: list[str], prog: str, default: T | None = None) -> T:
    """Parse ``args`` into ``cls`` with tyro; a parse error becomes one ``KprlError`` line (not tyro's box)."""
    args = with_bare_flags(args, bool_flags(cls))
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
            return tyro.cli(cls, args=args, default=default, prog=prog, config=TYRO_CONFIG)
    except SystemExit as exc:
        text = buffer.getvalue()
        if not exc.code:  # --help: show tyro's text as it is
            print(text, end="")
            raise
        raise KprlError(f"{one_line(text)} (see {prog} --help)") from None
