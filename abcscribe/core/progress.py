"""Progress on stderr: a tqdm bar (count, rate, ETA) when stderr is a terminal, nothing
otherwise, so logs and pipes stay clean. Core and commands share these two functions:
``progress`` over a batch's inputs, ``meter`` for the work inside one long input (a long
render, a piece cut into many clips)."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

# a bar inside one input shows only when that input takes longer than this (seconds): short
# inputs, the usual case, draw nothing over the batch's own bar
INNER_DELAY = 2.0


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             unit: str = "it") -> Iterator[T]:
    """Yield ``items``, drawing a bar on stderr when stderr is a terminal."""
    if not _tty():
        yield from items
        return
    from tqdm import tqdm

    with tqdm(items, total=total, desc=desc or None, file=sys.stderr, unit=unit, leave=False,
              dynamic_ncols=True) as bar:
        yield from bar


class _Quiet:
    """What ``meter`` gives when stderr is not a terminal: counts nothing, draws nothing."""

    def update(self, n: float = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def meter(total: float, desc: str = "", unit: str = "it", scale: bool = False):
    """A context manager with ``update(n)`` for progress inside one input: a second bar (below
    a batch's) with rate and ETA, drawn on stderr when it is a terminal and the work lasts
    longer than INNER_DELAY seconds; else nothing. ``scale``: SI prefixes on the counts."""
    if not _tty():
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc or None, file=sys.stderr, unit=unit, leave=False,
                dynamic_ncols=True, delay=INNER_DELAY, position=1, unit_scale=scale)


def on_terminal() -> bool:
    """Whether progress is drawn here (stderr is a terminal)."""
    return _tty()


def hub_bars() -> None:
    """The bars of transformers and the hub (a real download, loading big weights): kept on a
    terminal, where a person waits for them; turned off elsewhere, where they would fill logs."""
    if _tty():
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
