"""The `omnimodel` command line: `main()` in cli/main.py, one module per subcommand."""

from omnimodel.cli.command import Command

__all__ = ["Command"]
