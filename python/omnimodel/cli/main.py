"""Entry point of the `omnimodel` command.

Subcommands are `Command`s listed in `COMMANDS`; adding one (convert, validate, bench, eval, doctor) means
writing `omnimodel/cli/<name>_cmd.py` with a `COMMAND` and adding it to the list below.
Expected failures (`OmnimodelError`, and OS errors such as a missing file) print one line on stderr and
exit with code 2; anything else is a bug and keeps its traceback. `--debug` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import omnimodel
from omnimodel.cli import (
    bench_cmd,
    collect_demos_cmd,
    convert_cmd,
    doctor_cmd,
    eval_cmd,
    export_llm_cmd,
    inspect_cmd,
    merge_demos_cmd,
    train_demo_cmd,
    validate_cmd,
)
from omnimodel.cli.command import Command
from omnimodel.errors import OmnimodelError

COMMANDS: list[Command] = [
    inspect_cmd.COMMAND,
    doctor_cmd.COMMAND,
    convert_cmd.COMMAND,
    validate_cmd.COMMAND,
    bench_cmd.COMMAND,
    export_llm_cmd.COMMAND,
    collect_demos_cmd.COMMAND,
    merge_demos_cmd.COMMAND,
    eval_cmd.COMMAND,
    train_demo_cmd.COMMAND,
]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def version_string() -> str:
    """`omnimodel <version>`, plus the ggml version the native runtime was built against and what its CPU
    backend was compiled with (SIMD, llamafile, OpenMP, repack), when it loads."""
    text = f"omnimodel {omnimodel.__version__}"
    ggml = _ggml_version()
    if not ggml:
        return text
    from omnimodel.cpu import describe

    return f"{text} (ggml {ggml})\ncpu features: {describe()}"


def _ggml_version() -> str | None:
    try:
        import omnimodel._runtime as runtime  # noqa: PLC0415  (native; absent in a pure-Python checkout)
    except (ImportError, OSError):
        return None
    get = getattr(runtime, "ggml_version", None)
    if get is None:
        return None
    try:
        return str(get())
    except Exception:  # noqa: BLE001  --version must work even with a half-broken runtime build
        return None


def build_parser() -> argparse.ArgumentParser:
    # Accept --debug after the subcommand too; SUPPRESS keeps the subparser from resetting the global flag.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog="omnimodel",
        description="Turn VLA robot policies into low-bit GGUF files and run them with ggml.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--cmake-dir", action="store_true", help="print the folder of the CMake package config (for -Domnimodel_DIR=)"
    )
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help, parents=[common])
        cmd.add_arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # A kill (a job scheduler's timeout, a user's `kill`) unwinds like Ctrl-C: the commands' cleanup
    # (staging directories, partial files) runs, where the default action would leave them behind.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.version:
        print(version_string())
        return EXIT_OK
    if args.cmake_dir:
        from omnimodel.paths import cmake_dir

        print(cmake_dir())
        return EXIT_OK
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return command.run(args)
    except BrokenPipeError:
        # The reader went away (`omnimodel inspect x | head`); stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("omnimodel: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OmnimodelError, OSError) as e:
        if debug:
            raise
        print(f"omnimodel {command.name}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as e:
        from omnimodel.extras import missing_extra

        err = missing_extra(e)
        if err is None or debug:
            raise
        print(f"omnimodel {command.name}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001  only the runtime's status errors are handled here
        if debug or not _is_runtime_status(e):
            raise
        # the compiled runtime refused something mid-command (a graph and a file that disagree, a model it
        # cannot load): one line naming it, as for any other error
        print(f"omnimodel {command.name}: error: the runtime: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def _is_runtime_status(e: BaseException) -> bool:
    """``omnimodel._runtime.RuntimeStatusError``, recognised without importing the extension."""
    t = type(e)
    return t.__name__ == "RuntimeStatusError" and t.__module__ == "omnimodel._runtime"


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
