"""What every command module shares: the batch loop (error records, resumable outputs,
non-zero exit when any input failed), JSONL on stdout, progress on stderr."""

from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

import typer

from abcscribe.core import files
from abcscribe.core.errors import UserError
from abcscribe.core.files import warn, write_record  # noqa: F401  (commands import warn from here)
from abcscribe.core.options import check_tracker  # noqa: F401  (ppo imports it from here)
from abcscribe.core.progress import progress  # noqa: F401  (commands import it from here)

T = TypeVar("T")


def emit(record: dict[str, Any], stream=None) -> None:
    """Write one JSONL record to stdout (data only) and flush, so pipelines stream."""
    write_record(stream or sys.stdout, record)


def freeze_imports() -> None:
    """Move every object alive now (modules, classes, the app: all kept to the end of the
    run) out of the cyclic collector's sight, so its full passes during the run do not walk
    them again (``midi2abc`` on a folder: about 5% of the run)."""
    import gc

    gc.freeze()


class Batch(files.Batch):
    """``core.files.Batch`` for a command: ``finish()`` exits non-zero when any input failed."""

    passthrough = files.Batch.passthrough + (typer.Exit,)

    def finish(self) -> None:
        exit_with(self.status())


def exit_with(status: int) -> None:
    """End the command with ``status`` (a core run's result) when it is not 0."""
    if status:
        raise typer.Exit(status)


def device_option():
    """The --device option, the same in every command that runs a model."""
    from abcscribe.core.device import DEVICE_HELP

    return typer.Option("auto", "--device", help=DEVICE_HELP)


def check_top_p(top_p: float) -> float:
    if not (0.0 < top_p <= 1.0):
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    return top_p


def lazy(fn: Callable[[], T]) -> T:  # pragma: no cover - readability helper
    return fn()


def options_of(cls, fn):
    """A typer command function: ``fn``'s own parameters (except ``opts``) plus one option per
    field of dataclass ``cls`` made with ``core.options.option`` (its flag, default, help,
    bounds, choices as an enum). ``fn`` is called with ``opts=cls(...)`` of those fields."""
    import dataclasses
    import enum
    import inspect
    import typing
    from types import UnionType

    hints = typing.get_type_hints(cls)
    fn_hints = typing.get_type_hints(fn)
    own = [p.replace(annotation=fn_hints.get(p.name, p.annotation))
           for p in inspect.signature(fn).parameters.values() if p.name != "opts"]
    fields, extra, enums = [], [], {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "help" not in m or not m["cli"]:
            continue
        typ = hints[f.name]
        args = typing.get_args(typ)
        optional = (typing.get_origin(typ) in (typing.Union, UnionType)) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else typ
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if m["choices"]:
            base = enums[f.name] = enum.Enum(f"{cls.__name__}_{f.name}",
                                             [(c, c) for c in m["choices"]], type=str)
            default = None if default is None else base(default)
        # bounds are checked by check_options (one place, messages naming the flag)
        kw = {"metavar": m["metavar"]} if m["metavar"] else {}
        decls = list(m["flags"]) or ["--" + f.name.replace("_", "-")]
        extra.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[base] if optional else base,
            default=typer.Option(default, *decls, help=m["help"], **kw)))
        fields.append(f.name)

    def command(**kwargs):
        values = {k: kwargs.pop(k) for k in fields}
        for k, e in enums.items():
            if isinstance(values[k], enum.Enum):
                values[k] = values[k].value
        return fn(**kwargs, opts=cls(**values))

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__, command.__name__, command.__module__ = fn.__doc__, fn.__name__, fn.__module__
    return command
