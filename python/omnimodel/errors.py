"""Exceptions omnimodel raises on purpose.

Everything derives from `OmnimodelError` so the CLI can tell an expected failure (print one line, exit 2)
from a bug (show the traceback). Subclasses that describe bad input also derive from `ValueError`, so
code that only knows the standard library can still catch them.
"""

from __future__ import annotations

import os


class OmnimodelError(Exception):
    """Base class of every error omnimodel raises deliberately."""


class UsageError(OmnimodelError, ValueError):
    """The caller asked for something that cannot be done as asked (bad option, bad argument)."""


class GGUFFormatError(OmnimodelError, ValueError):
    """A file is not a GGUF file omnimodel can trust: bad magic, truncated, inconsistent, ..."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class GGUFWriteError(OmnimodelError, ValueError):
    """A GGUF file cannot be written as requested (duplicate tensor, bad name, bad shape, writer finished)."""


class TensorNotFoundError(OmnimodelError, LookupError):
    """A tensor name that is not in the file or model."""
