"""The contract between `omnimodel.cli.main` and a subcommand module."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand. Modules define one `COMMAND = Command(...)` and keep heavy imports (torch, the
    runtime) inside `run`, so `omnimodel --version` and `--help` stay fast whatever else is installed.

    `run` returns the exit code; expected failures should raise an `OmnimodelError`, which main() prints
    as one line and turns into exit code 2.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
