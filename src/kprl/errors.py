"""Exceptions that the CLI turns into a one-line message and a non-zero exit (no traceback)."""


class KprlError(Exception):
    """A problem the user can fix: bad option, bad file, missing backend. The message is the whole story."""


class ConfigError(KprlError, ValueError):
    """An option is unknown, out of range, or conflicts with an existing run."""


class CheckpointError(KprlError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another agent or image size."""


class TrainingError(KprlError):
    """Training cannot go on (for example a loss became non-finite)."""


class DataError(KprlError):
    """A dataset or frame file is missing, empty, truncated, or holds arrays of the wrong name, dtype or shape."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, stripped (its type name when the message is empty): how
    a library's many-line error is quoted inside kprl's one-line messages."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
