"""Options declared once: a dataclass field made with ``option`` carries its default, help,
flag and the rule its value must follow. ``check_options`` applies the rules (messages name
the flag); the command layer derives its typer options from the same fields
(``cmds._base.options_of``), so nothing is declared twice. No typer here: core stays free of
the CLI."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from abcscribe.core.errors import UserError


def option(default: Any, help: str, *, flags: Sequence[str] | None = None,
           metavar: str | None = None, choices: Sequence[str] | None = None,
           min: float | None = None, max: float | None = None, above: float | None = None,
           cli: bool = True) -> Any:
    """A dataclass field with what the command line needs to offer it. ``min``/``max``:
    inclusive bounds; ``above``: an exclusive lower bound; ``choices``: the allowed strings
    (an enum on the command line); ``cli=False``: an option of the library only."""
    meta = {"help": help, "flags": tuple(flags or ()), "metavar": metavar,
            "choices": tuple(choices) if choices else None, "min": min, "max": max,
            "above": above, "cli": cli}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    flags = f.metadata.get("flags") or ()
    return flags[0].split("/")[0] if flags else "--" + f.name.replace("_", "-")


def check_options(obj: Any) -> None:
    """A UserError naming the flag for the first field of ``obj`` whose value breaks its
    rule (None passes: it means 'the default choice')."""
    for f in dataclasses.fields(obj):
        m, v = f.metadata, getattr(obj, f.name)
        if "help" not in m or v is None or isinstance(v, bool):
            continue
        flag = flag_of(f)
        if m["choices"] is not None and v not in m["choices"]:
            raise UserError(f"{flag} must be one of {', '.join(m['choices'])}, got {v!r}")
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{flag} must be a finite number, got {v}")
            lo, hi, above = m["min"], m["max"], m["above"]
            bad = ((lo is not None and v < lo) or (hi is not None and v > hi)
                   or (above is not None and not v > above))
            if bad:
                raise UserError(f"{flag} must be {_rule(lo, hi, above)}, got {v if isinstance(v, int) else format(v, 'g')}")


def _rule(lo, hi, above) -> str:
    if hi is not None and (lo is not None or above is not None):
        return f"in {'[' if lo is not None else '('}{lo if lo is not None else above:g}, {hi:g}]"
    if hi is not None:
        return f"at most {hi:g}"
    return f"at least {lo:g}" if lo is not None else f"greater than {above:g}"


def check_tracker(name: str) -> None:
    """--report-to NAME: a one-line error, before any work, when NAME's package is missing."""
    import importlib.util

    if name in ("none", "") or importlib.util.find_spec(name) is not None:
        return
    extra = " (pip install 'abcscribe[tensorboard]')" if name == "tensorboard" else ""
    raise UserError(f"--report-to {name}: the '{name}' package is not installed "
                    f"(pip install {name}){extra}")
