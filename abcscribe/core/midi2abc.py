"""MIDI files to ABC, as a batch: ``Midi2ABCOptions`` (every option of ``abcscribe midi2abc``,
declared once) and ``convert_files`` (inputs in order, resumable ``-o DIR`` outputs, worker
processes, one error record per bad input). The notation itself is ``core.abc.write_abc``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, TextIO

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option


@dataclass(frozen=True)
class Midi2ABCOptions:
    """Every option of ``abcscribe midi2abc``: name, default, help and rule, declared once."""

    jsonl: bool = option(False, 'Print one JSON record per input instead of ABC: {"path", "abc", "error"}.')
    unit: str = option("1/16", "Default note length L: of the ABC.", metavar="1/N")
    grid: str = option("16", "Quantization grid in notes per whole note, 1-256 (16 = sixteenths, with triplets where they fit better); 'none' keeps the file's timing.", metavar="N|none")
    key: str = option("auto", metavar="KEY", help="K: of the ABC: auto (the file's key signature, else estimated from the notes), none (no signature, every accidental written), or a key such as G, Am, Ddor.")
    layout: str = option("voices", "voices: each voice in turn; interleaved: [V:n] lines bar group by bar group.", choices=("voices", "interleaved"))
    bars_per_line: int = option(4, "Bars on each line of music (at least 1).", metavar="N", min=1)
    drums: str = option("keep", "keep: drum tracks become a voice on MIDI channel 10; drop.", choices=("keep", "drop"))
    pickup: bool = option(True, "Find a pickup bar (anacrusis) from the notes, as MIDI files do not say (--no-pickup: bar lines from the file's start).", flags=["--pickup/--no-pickup"])
    overwrite: bool = option(False, "With -o, replace .abc files that exist (default: skip them).")
    jobs: int = option(1, "Convert N files at a time in worker processes (0: one per CPU core). Output order and contents are the same as with 1.", flags=["--jobs", "-j"], metavar="N", min=0)

    def check(self) -> None:
        """UserError naming the option for a value that cannot convert; before any work."""
        check_options(self)
        self.unit_fraction()
        self.grid_notes()
        key = self.key_signature()
        if key is not None and key.strip().lower() != "none":
            from abcscribe.core.abc import parse_key

            if not parse_key(key)[2]:
                raise UserError(f"--key: not a key: {self.key!r} (try auto, none, G, Am, Ddor)")

    def unit_fraction(self) -> Fraction:
        from abcscribe.core.abc import parse_unit

        return parse_unit(self.unit)

    def grid_notes(self) -> int | None:
        """--grid as notes per whole note; None: the file's own timing."""
        t = self.grid.strip().lower()
        if t in ("none", "off", "0"):
            return None
        if not t.isdigit() or not 1 <= int(t) <= 256:
            raise UserError(f"--grid must be notes per whole note (1-256, e.g. 16) or none, got {self.grid!r}")
        return int(t)

    def key_signature(self) -> str | None:
        """--key for the writer: None for auto."""
        return None if self.key.strip().lower() == "auto" else self.key


def convert_files(inputs: list[str], output_dir: Path | None, opts: Midi2ABCOptions,
                  out: TextIO) -> int:
    """Convert every MIDI input to ABC: all tunes on ``out`` (X: numbered in input order), or
    one .abc per input under ``output_dir`` (mirroring sub-folders; existing ones skipped
    unless ``opts.overwrite``), or JSONL records on ``out`` with ``opts.jsonl``. Returns the
    exit status: 1 when any input failed (its record carries the error), else 0."""
    from abcscribe.core.files import (MIDI_EXTS, Batch, atomic_write, check_output_dir,
                                      gather_inputs, mirrored_outputs, output_done, write_record)
    from abcscribe.core.midi import read_midi_columns  # noqa: F401  (numpy, symusic: now, before forking)
    from abcscribe.core.progress import progress

    opts.check()
    if output_dir is not None:
        check_output_dir(output_dir, "-o")
    items = gather_inputs(inputs, MIDI_EXTS, "MIDI files", jsonl=False, stdin_kind="file")
    # with no -o, every tune goes to stdout
    outs = mirrored_outputs(items, output_dir, ".abc") if output_dir is not None else [None] * len(items)

    settings = dict(grid=opts.grid_notes(), drums=opts.drums, unit=opts.unit_fraction(),
                    layout=opts.layout, pickup=opts.pickup, bars_per_line=opts.bars_per_line,
                    key=opts.key_signature())
    todo = []  # (record, output path, task or None: skipped or failed already) in input order
    for x, (item, path) in enumerate(zip(items, outs), 1):
        rec = {"path": str(item.path) if item.path is not None else "-", "abc": None, "error": None}
        if path is not None:
            rec["output"] = str(path)
        try:
            item.check()
            if path is not None and not opts.overwrite and output_done(path):
                todo.append((rec, path, None))
                continue
        except UserError as e:
            rec["error"] = str(e)
            todo.append((rec, path, None))
            continue
        source = sys.stdin.buffer.read() if item.path is None else item.path
        title = item.path.stem if item.path is not None else ""
        todo.append((rec, path, (source, 1 if path is not None else x, title, settings)))

    jobs = opts.jobs if opts.jobs > 0 else (os.cpu_count() or 1)
    tasks = [t for _, _, t in todo if t is not None]
    results = convert_all(tasks, min(jobs, len(tasks)))
    batch = Batch()
    first = True
    for rec, path, task in progress(todo, total=len(todo), desc="midi2abc", unit="file"):
        if task is None and not rec["error"]:
            print(f"abcscribe: {path} exists, skipped (--overwrite replaces it)", file=sys.stderr)
            if opts.jsonl:
                rec["abc"] = path.read_text(encoding="utf-8", errors="replace")
                write_record(out, rec)
            continue
        abc, error, warnings = next(results) if task is not None else (None, rec["error"], [])
        for w in warnings:
            print(f"abcscribe: warning: {rec['path']}: {w}", file=sys.stderr)
        with batch.guard(rec):
            if error is not None:
                raise UserError(error)
            rec["abc"] = abc
            if path is not None:
                atomic_write(path, abc)
        if opts.jsonl:
            write_record(out, rec)
        elif path is None and rec["abc"] is not None:
            out.write(("" if first else "\n") + rec["abc"])
            out.flush()
            first = False
    return batch.status()


def convert(task) -> tuple[str | None, str | None, list[str]]:
    """One input to ABC: (abc, None, warnings), or (None, the one-line error, warnings)."""
    from abcscribe.core.abc import write_abc
    from abcscribe.core.midi import find_pickup, read_midi_columns

    source, x, title, o = task
    warnings: list[str] = []
    try:
        if isinstance(source, bytes) and not source:
            raise UserError("-: no MIDI data on stdin")
        # the notes as columns: no Note objects on the way from MIDI to ABC
        piece, notes = read_midi_columns(source, grid=o["grid"], warnings=warnings)
        if o["drums"] == "drop":
            notes = [c for v, c in zip(piece.voices, notes) if not v.drum]
            piece.voices = [v for v in piece.voices if not v.drum]
        if o["pickup"] and not piece.anacrusis:
            piece.anacrusis = find_pickup(piece, notes)
        return write_abc(piece, x=x, unit=o["unit"], layout=o["layout"],
                         bars_per_line=o["bars_per_line"], key=o["key"],
                         title=piece.title or title, notes=notes), None, warnings
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - one bad file is that file's error record
        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        return None, (msg.splitlines()[0] if msg else type(e).__name__), warnings


def convert_all(tasks: list, jobs: int, convert=convert) -> Iterator[tuple[str | None, str | None, list[str]]]:
    """``convert`` of each task, in order: in this process, or in ``jobs`` forked workers
    (the reader and writer are imported already, so a worker starts in milliseconds). A worker
    that dies (the out-of-memory killer) ends the batch with a UserError."""
    if jobs <= 1:
        yield from map(convert, tasks)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        # at most a few tasks ahead of the one written out: outputs stream, memory stays flat
        ahead = jobs * 2
        futures = deque(pool.submit(convert, t) for t in tasks[:ahead])
        for i in range(len(tasks)):
            try:
                result = futures.popleft().result()
            except BrokenProcessPool:
                raise UserError("a --jobs worker died (killed, or out of memory) while "
                                f"converting input {i + 1} of {len(tasks)}; the batch stops "
                                "here (outputs so far are complete)") from None
            if i + ahead < len(tasks):
                futures.append(pool.submit(convert, tasks[i + ahead]))
            yield result
