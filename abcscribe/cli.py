"""The ``abcscribe`` command: a typer app whose subcommands live in ``abcscribe.cmds``.

This is the one place where a ``UserError`` becomes a one-line message and exit status 2."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys

import typer

try:  # typer >= 0.26 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

_Abort = getattr(typer, "Abort", None) or getattr(click_exceptions, "Abort")

from abcscribe import __version__
from abcscribe.cmds import COMMANDS
from abcscribe.cmds._base import freeze_imports
from abcscribe.core.errors import UserError

HELP = (
    "Transcribe music recordings to ABC notation with audio language models.\n\n"
    "Subcommands read files, folders, or JSONL on stdin and write ABC or JSONL on stdout, "
    "so they chain in shell pipelines and Makefiles. See 'abcscribe COMMAND --help' and "
    "'man abcscribe-COMMAND'."
)


def _version(value: bool) -> None:
    if value:
        print(f"abcscribe {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Transcribe music recordings to ABC notation with audio language models."""


class _PipeClosed(Exception):
    """The reader of stdout went away (``| head -1``). Raised in place of BrokenPipeError,
    which click would turn into exit status 1."""


def _quiet_pipe(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BrokenPipeError, _PipeClosed):
            raise _PipeClosed() from None

    return run


def build_app(only: str | None = None) -> typer.Typer:
    """The typer app with every subcommand, or with just ``only`` (what a run of one command
    needs: the other command modules are not imported, which keeps pipeline calls quick)."""
    app = typer.Typer(
        name="abcscribe",
        help=HELP,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name, module in COMMANDS:
        if only is None or name == only:
            app.command(name)(_quiet_pipe(importlib.import_module(f"abcscribe.cmds.{module}").main))
    return app


def __getattr__(name: str):
    if name == "app":  # the whole app, built on first use (``from abcscribe.cli import app``)
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(name)


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # the first word that is not an option names the subcommand (root options take no value)
    first = next((a for a in args if not a.startswith("-")), None)
    only = first if first in {name for name, _ in COMMANDS} else None
    command = typer.main.get_command(build_app(only))
    # SIGTERM (kill, a scheduler's time limit) unwinds like an exit, so children such as
    # render's fluidsynth are killed and temporary files removed on the way out
    signal.signal(signal.SIGTERM, _terminated)
    freeze_imports()
    try:
        rv = command.main(args=args, prog_name="abcscribe", standalone_mode=False)
    except UserError as e:
        print(f"abcscribe: error: {e}", file=sys.stderr)
        sys.exit(2)
    except _Abort:
        print("abcscribe: interrupted", file=sys.stderr)
        sys.exit(130)
    except click_exceptions.UsageError as e:
        # one line, like every other mistake a user can make: what was wrong, where to look
        ctx = e.ctx
        where = ctx.command_path if ctx is not None else "abcscribe"
        hint = f" (see '{where} --help')" if ctx is not None else ""
        print(f"{where}: error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click_exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("abcscribe: interrupted", file=sys.stderr)
        sys.exit(130)
    except (BrokenPipeError, _PipeClosed):
        # the reader of our stdout went away (e.g. `| head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
