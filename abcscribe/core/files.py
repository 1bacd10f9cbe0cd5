"""Inputs and outputs every command shares: expanding files/folders/JSONL/stdin into work items,
the batch (one error record per bad input, the others go on), atomic writes, JSONL reading and
writing."""

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
    record it came from (passed through by commands), or an empty dict; ``error`` says why
    this input cannot be worked on (a missing path, a malformed JSONL line): the command
    reports it as this input's error record and goes on with the others."""

    path: Path | None
    rel: Path
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def check(self) -> None:
        """A UserError when this input could not be read (its ``error``)."""
        if self.error:
            raise UserError(self.error)

    @property
    def name(self) -> str:
        if self.path is not None:
            return str(self.path)
        return str(self.record.get("id", self.rel)) if isinstance(self.record, dict) else str(self.rel)


class BadLine(dict):
    """What ``read_jsonl(..., bad="keep")`` yields for a line that is not a JSON object: a
    record ``{"line": N, "error": "..."}`` that a batch reports as that line's error."""


def read_jsonl(path: str | Path, stream=None, bad: str = "raise") -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (``-`` or ``stream`` reads that stream, text or bytes). Blank
    lines are skipped. A line that is not a UTF-8 JSON object is a UserError naming the line
    (``bad="raise"``), or yielded as a ``BadLine`` and the reading goes on (``bad="keep"``)."""
    if stream is None:
        if str(path) == "-":
            stream = sys.stdin.buffer
        else:
            p = Path(path)
            if p.is_dir():
                raise UserError(f"{path}: is a folder, not a JSONL file")
            try:
                stream = open(p, "rb")
            except OSError as e:
                raise UserError(f"{path}: cannot open ({e.strerror or e})") from None
    own = stream is not sys.stdin and stream is not getattr(sys.stdin, "buffer", None)
    try:
        for i, line in enumerate(stream, 1):
            problem = None
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError:
                    problem = "not UTF-8 text"
            if problem is None:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    problem = f"not valid JSON ({e.msg})"
                else:
                    if not isinstance(rec, dict):
                        problem = "a JSONL record must be an object"
            if problem is not None:
                msg = f"{path}:{i}: {problem}"
                if bad == "raise":
                    raise UserError(msg)
                yield BadLine(line=i, error=msg)
                continue
            yield rec
    finally:
        if own:
            stream.close()


def expand_inputs(
    inputs: Iterable[str], exts: tuple[str, ...], jsonl: bool = True, stdin_kind: str = "jsonl"
) -> Iterator[Item]:
    """Expand command-line inputs into Items, in order: a file is itself; a folder is walked
    recursively in sorted order for files with one of ``exts``; a ``.jsonl`` file (when
    ``jsonl``) yields its records; ``-`` reads stdin as JSONL records (``stdin_kind='jsonl'``)
    or as raw bytes of one file (``stdin_kind='file'``: Item.path is None, record
    ``{"stdin": True}``). A missing path or a malformed JSONL line is an Item with ``error``
    set, so one bad input never stops the others."""
    for raw in inputs:
        if raw == "-":
            if stdin_kind == "jsonl":
                yield from _record_items(read_jsonl("-", bad="keep"), None)
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
        elif jsonl and p.suffix.lower() == ".jsonl" and p.is_file():
            yield from _record_items(read_jsonl(p, bad="keep"), p.parent)
        elif p.is_file():
            yield Item(p, Path(p.name))
        elif p.exists():
            yield Item(p, Path(p.name), error=f"{p}: not a regular file")
        else:
            yield Item(p, Path(p.name), error=f"{p}: no such file or folder")


def gather_inputs(inputs: Iterable[str], exts: tuple[str, ...], what: str, **kw) -> list[Item]:
    """``expand_inputs`` as a list, for a command's batch: nothing found is a "nothing to do"
    UserError; a lone input that cannot be read is its UserError (a batch of one)."""
    items = list(expand_inputs(inputs, exts, **kw))
    if not items:
        raise nothing_to_do(f"no {what} in the inputs")
    if len(items) == 1:
        items[0].check()
    return items


def _record_items(records: Iterable[dict[str, Any]], base: Path | None) -> Iterator[Item]:
    for rec in records:
        if isinstance(rec, BadLine):
            yield Item(None, Path(f"line-{rec['line']}"), {}, error=rec["error"])
            continue
        try:
            rp = _rec_path(rec, base=base)
        except UserError as e:
            yield Item(None, Path(str(rec.get("id", "record"))), rec, error=str(e))
            continue
        default = "-" if base is None else (rp.name if rp is not None else "record")
        yield Item(rp, Path(str(rec.get("id", default))), rec)


def _rec_path(rec: dict[str, Any], base: Path | None = None) -> Path | None:
    for key in ("audio", "path", "midi", "abc_path"):
        v = rec.get(key)
        if v is None or v == "":
            continue
        if not isinstance(v, str):
            name = rec.get("id", "record")
            raise UserError(f"{name}: '{key}' must be a path (a string), got {json.dumps(v)[:40]}")
        q = Path(v)
        if base is not None and not q.is_absolute() and not q.exists():
            alt = base / q
            if alt.exists():
                return alt
        return q
    return None


def clip_span(rec: dict[str, Any]) -> tuple[float, float | None]:
    """A record's ``offset`` and ``duration`` in seconds (0 and None when absent); a
    UserError naming the field when one is not a number >= 0."""
    out = []
    for key, default in (("offset", 0.0), ("duration", None)):
        v = rec.get(key)
        if v is None or v == "":
            out.append(default)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = float("nan")
        if isinstance(v, bool) or not (x >= 0) or x == float("inf"):
            name = rec.get("id", "record")
            raise UserError(f"{name}: '{key}' must be a number of seconds >= 0, got {json.dumps(v)[:40]}")
        out.append(x)
    return out[0], out[1]


def nothing_to_do(what: str) -> UserError:
    """The error for inputs that hold nothing to work on (an empty folder, empty stdin)."""
    return UserError(f"nothing to do: {what}")


# ---- the batch -------------------------------------------------------------------------------
class Batch:
    """Counts failures across a batch; ``status()`` says how it went (0, or 1 when any input
    failed, with a line on stderr).

    Use ``with batch.guard(record):`` around one input's work: a UserError or any other
    exception becomes ``record['error']`` (one line, also on stderr) and the batch goes on."""

    # exceptions that end the run rather than one input: an interrupt, an exit, a reader of
    # stdout that went away (the CLI ends the run quietly)
    passthrough: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, BrokenPipeError)

    def __init__(self) -> None:
        self.failed = 0
        self.done = 0

    def guard(self, record: dict[str, Any], name: str | None = None):
        """Context for one input's work; an error message that does not name the input gets
        ``name`` in front."""
        return _Guard(self, record, name)

    def fail(self, record: dict[str, Any], message: str) -> None:
        """Count ``record`` as failed with ``message`` (an input found bad before any work)."""
        with self.guard(record):
            raise UserError(message)

    def status(self) -> int:
        """0 when every input went well; else 1, after saying how many failed on stderr."""
        if not self.failed:
            return 0
        print(f"abcscribe: {self.failed} of {self.failed + self.done} inputs failed", file=sys.stderr)
        return 1


class _Guard:
    def __init__(self, batch: Batch, record: dict[str, Any], name: str | None = None):
        self.batch, self.record, self.name = batch, record, name

    def __enter__(self):
        return self.record

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.batch.done += 1
            return False
        if issubclass(exc_type, self.batch.passthrough):
            return False
        self.batch.failed += 1
        msg = str(exc) if isinstance(exc, UserError) else f"{exc_type.__name__}: {exc}"
        msg = msg.splitlines()[0] if msg else exc_type.__name__
        if self.name and self.name not in msg:
            msg = f"{self.name}: {msg}"
        self.record["error"] = msg
        print(f"abcscribe: error: {msg}", file=sys.stderr)
        return True  # swallow: the batch goes on


def write_record(stream, record: dict[str, Any]) -> None:
    """One JSONL record on ``stream`` (a command's stdout), flushed so pipelines stream."""
    stream.write(dumps(record) + "\n")
    stream.flush()


def warn(msg: str) -> None:
    """A warning on stderr, one line."""
    print(f"abcscribe: warning: {msg}", file=sys.stderr)


# ---- outputs ---------------------------------------------------------------------------------
def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder outputs can go into (made later, when written): a UserError now,
    before any work, when it is a file, lies under a file, or cannot be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p}: exists and is not a folder")
    _check_parents(p, option)
    return p


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` as a file to write: a UserError now when it is a folder, lies under a file, or
    its folder cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {p}: is a folder; give a file name")
    _check_parents(p.parent, option, p)
    return p


def _check_parents(folder: Path, option: str, shown: Path | None = None) -> None:
    shown = shown or folder
    q = folder
    while not q.exists():
        if q.parent == q:
            return
        q = q.parent
    if not q.is_dir():
        raise UserError(f"{option} {shown}: {q} is a file, not a folder")
    if not os.access(q, os.W_OK | os.X_OK):
        raise UserError(f"{option} {shown}: {q} is not writable")


def check_unique_outputs(pairs: Iterable[tuple[str, Path | None]]) -> None:
    """A UserError when two inputs would write the same output file (``x.wav`` and
    ``x.flac`` in one folder, ``A/x.mid`` and ``B/x.mid`` given as files), naming both."""
    seen: dict[Path, str] = {}
    for name, out in pairs:
        if out is None:
            continue
        key = Path(os.path.normpath(out))
        if key in seen and seen[key] != name:
            raise UserError(f"{seen[key]} and {name} would both be written to {out}; "
                            "give them separately or rename one")
        seen.setdefault(key, name)


def mirrored_outputs(items: list[Item], folder: Path | None, suffix: str,
                     stdin_name: str = "stdin") -> list[Path | None]:
    """The output path of each item: under ``folder``, mirroring the item's sub-folders, with
    ``suffix``; beside the input when ``folder`` is None (None for stdin). Two inputs that
    would share one output are a UserError (``check_unique_outputs``)."""
    outs: list[Path | None] = []
    for it in items:
        if folder is not None:
            outs.append(folder / (it.rel if it.path is not None else Path(stdin_name)).with_suffix(suffix))
        else:
            outs.append(None if it.path is None else it.path.with_suffix(suffix))
    check_unique_outputs((it.name, o) for it, o in zip(items, outs) if not it.error)
    return outs


def output_done(path: Path) -> bool:
    """Whether an output exists already (a re-run skips it); a UserError when something other
    than a file sits at its name."""
    if path.is_file():
        return True
    if path.exists() or path.is_symlink():
        raise UserError(f"{path}: exists and is not a file")
    return False


_UMASK: int | None = None


def _file_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp's files are 0600)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader never sees
    half a file and an interrupted run leaves no partial output."""
    path = Path(path)
    fd, tmp = _mkstemp(path, "." + path.name + ".", ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _mkstemp(path: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A temporary file beside ``path`` (its folder made); a UserError when it cannot be."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e})") from None


def atomic_path(path: str | Path):
    """Context manager giving a temporary path beside ``path``; renamed onto it on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        fd, tmp = _mkstemp(self.path, "." + self.path.stem + ".", self.path.suffix)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.chmod(self.tmp, _file_mode())
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
