"""Progress on stderr: a tqdm bar (count, rate, ETA) when stderr is a terminal, nothing
otherwise, so logs and pipes stay clean. Core and commands share this one function."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Yield ``items``, drawing a bar on stderr when stderr is a terminal."""
    if not _tty():
        yield from items
        return
    from tqdm import tqdm

    with tqdm(items, total=total, desc=desc or None, file=sys.stderr, unit="", leave=False,
              dynamic_ncols=True) as bar:
        yield from bar


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
