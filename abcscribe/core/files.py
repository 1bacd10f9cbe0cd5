"""Inputs and outputs every command shares: expanding files/folders/JSONL/stdin into work items,
atomic writes, JSONL reading and writing."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from abcscribe.core.errors import UserError

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a")
MIDI_EXTS = (".mid", ".midi", ".kar")
ABC_EXTS = (".abc",)


@dataclass
class Item:
    """One unit of batch work: a file found on disk, or a JSONL record.

    ``path`` is the file (None for a record without one); ``rel`` is its path relative to the
    folder it was found in (used to mirror sub-folders in ``-o DIR``); ``record`` is the JSONL
    record it came from (passed through by commands), or an empty dict."""

    path: Path | None
    rel: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else str(self.record.get("id", self.rel))


def read_jsonl(path: str | Path, stream=None) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (``-`` or ``stream`` reads that stream). Blank lines are skipped;
    a line that is not a JSON object is a UserError naming the line."""
    if stream is None:
        if str(path) == "-":
            stream = sys.stdin
        else:
            try:
                stream = open(path, encoding="utf-8")
            except OSError as e:
                raise UserError(f"{path}: cannot open ({e.strerror or e})") from None
    with stream if stream is not sys.stdin else _nullcontext(stream) as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{i}: a JSONL record must be an object")
            yield rec


class _nullcontext:
    def __init__(self, v):
        self.v = v

    def __enter__(self):
        return self.v

    def __exit__(self, *a):
        return False


def expand_inputs(
    inputs: Iterable[str], exts: tuple[str, ...], jsonl: bool = True, stdin_kind: str = "jsonl"
) -> Iterator[Item]:
    """Expand command-line inputs into Items, in order: a file is itself; a folder is walked
    recursively in sorted order for files with one of ``exts``; a ``.jsonl`` file (when
    ``jsonl``) yields its records; ``-`` reads stdin as JSONL records (``stdin_kind='jsonl'``)
    or as raw bytes of one file (``stdin_kind='file'``: Item.path is None, record
    ``{"stdin": True}``). A missing path is a UserError."""
    for raw in inputs:
        if raw == "-":
            if stdin_kind == "jsonl":
                for rec in read_jsonl("-"):
                    yield Item(_rec_path(rec), Path(str(rec.get("id", "-"))), rec)
            else:
                yield Item(None, Path("-"), {"stdin": True})
            continue
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                (q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in exts),
                key=lambda q: q.relative_to(p).parts,
            )
            for q in found:
                yield Item(q, q.relative_to(p))
        elif jsonl and p.suffix.lower() == ".jsonl":
            if not p.exists():
                raise UserError(f"{p}: no such file")
            for rec in read_jsonl(p):
                rp = _rec_path(rec, base=p.parent)
                yield Item(rp, Path(str(rec.get("id", rp.name if rp else "record"))), rec)
        elif p.exists():
            yield Item(p, Path(p.name))
        else:
            raise UserError(f"{p}: no such file or folder")


def _rec_path(rec: dict[str, Any], base: Path | None = None) -> Path | None:
    for key in ("audio", "path", "midi", "abc_path"):
        v = rec.get(key)
        if isinstance(v, str) and v:
            q = Path(v)
            if base is not None and not q.is_absolute() and not q.exists():
                alt = base / q
                if alt.exists():
                    return alt
            return q
    return None


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader never sees
    half a file and an interrupted run leaves no partial output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_path(path: str | Path):
    """Context manager giving a temporary path beside ``path``; renamed onto it on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix="." + self.path.stem + ".", suffix=self.path.suffix, dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            try:
                self.tmp.unlink()
            except OSError:
                pass
        return False


def dumps(record: dict[str, Any]) -> str:
    """One JSONL line (no trailing newline), UTF-8, deterministic key order as given."""
    return json.dumps(record, ensure_ascii=False, default=_default)


def _default(o):
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def parse_kv(text: str, what: str) -> dict[str, float]:
    """Parse ``a=1,b=0.5`` into a dict of floats; UserError naming ``what`` when malformed."""
    out: dict[str, float] = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep:
            raise UserError(f"{what}: expected name=value, got {part!r}")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UserError(f"{what}: {k.strip()}={v!r} is not a number") from None
    return out
