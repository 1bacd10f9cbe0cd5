"""abcscribe midi2abc: MIDI files to ABC notation (exact notes: ties, chords, tuplets)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from abcscribe.cmds._base import Batch, emit, freeze_imports, progress
from abcscribe.core.errors import UserError


def main(
    inputs: List[str] = typer.Argument(
        ..., metavar="FILE|DIR|-...",
        help="MIDI files, folders of them (walked recursively, sorted), or - for one MIDI file "
        "on stdin.",
    ),
    output_dir: Optional[Path] = typer.Option(
        None, "-o", "--output-dir", metavar="DIR",
        help="Write one .abc per input into DIR, mirroring the inputs' sub-folders "
        "(default: all tunes on stdout).",
    ),
    jsonl: bool = typer.Option(
        False, "--jsonl", help='Print one JSON record per input instead of ABC: '
        '{"path", "abc", "error"}.'
    ),
    unit: str = typer.Option("1/16", "--unit", help="Default note length L: of the ABC."),
    grid: str = typer.Option(
        "16", "--grid",
        help="Quantization grid in notes per whole note (16 = sixteenths, with triplets where "
        "they fit better); 'none' keeps the file's timing.",
    ),
    key: str = typer.Option(
        "auto", "--key",
        help="K: of the ABC: auto (the file's key signature, else estimated from the notes), "
        "none (no signature, every accidental written), or a key such as G, Am, Ddor.",
    ),
    layout: str = typer.Option(
        "voices", "--layout",
        help="voices: each voice in turn; interleaved: [V:n] lines bar group by bar group.",
    ),
    bars_per_line: int = typer.Option(4, "--bars-per-line", help="Bars on each line of music."),
    drums: str = typer.Option(
        "keep", "--drums", help="keep: drum tracks become a voice on MIDI channel 10; drop."
    ),
    pickup: bool = typer.Option(
        True, "--pickup/--no-pickup",
        help="Find a pickup bar (anacrusis) from the notes, as MIDI files do not say "
        "(--no-pickup: bar lines from the file's start).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="With -o, replace .abc files that exist (default: skip them)."
    ),
    jobs: int = typer.Option(
        1, "-j", "--jobs", metavar="N", min=0,
        help="Convert N files at a time in worker processes (0: one per CPU core). Output "
        "order and contents are the same as with 1.",
    ),
) -> None:
    """Convert MIDI to ABC: one tune per input (X: numbered in input order) on stdout, one .abc
    per input with -o DIR, or JSONL records with --jsonl. Files longer than 100,000 quarter
    notes (a corrupt delta time) are refused with an error."""
    from abcscribe.core.abc import LAYOUTS, parse_key, parse_unit
    from abcscribe.core.files import (MIDI_EXTS, atomic_write, check_output_dir,
                                      check_unique_outputs, gather_inputs, output_done)
    from abcscribe.core.midi import read_midi_columns  # noqa: F401  (numpy, symusic: now)

    freeze_imports()  # with the reader's imports too

    unit_frac = parse_unit(unit)
    grid_n = _parse_grid(grid)
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if drums not in ("keep", "drop"):
        raise UserError(f"--drums must be keep or drop, got {drums!r}")
    if bars_per_line < 1:
        raise UserError(f"--bars-per-line must be at least 1, got {bars_per_line}")
    key_arg = None if key.strip().lower() == "auto" else key
    if key_arg is not None and key_arg.strip().lower() != "none" and not parse_key(key_arg)[2]:
        raise UserError(f"--key: not a key: {key!r} (try auto, none, G, Am, Ddor)")
    if output_dir is not None:
        check_output_dir(output_dir, "-o")

    items = gather_inputs(inputs, MIDI_EXTS, "MIDI files", jsonl=False, stdin_kind="file")
    outs = [None if output_dir is None else
            output_dir / (it.rel if it.path is not None else Path("stdin")).with_suffix(".abc")
            for it in items]  # fmt: skip
    check_unique_outputs((it.name, out) for it, out in zip(items, outs) if not it.error)

    opts = dict(grid=grid_n, drums=drums, unit=unit_frac, layout=layout, pickup=pickup,
                bars_per_line=bars_per_line, key=key_arg)
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    batch = Batch()
    first = True
    todo = []  # (record, output path, task or None: skipped or failed already) in input order
    for x, (item, out) in enumerate(zip(items, outs), 1):
        rec = {"path": str(item.path) if item.path is not None else "-", "abc": None, "error": None}
        if out is not None:
            rec["output"] = str(out)
        try:
            item.check()
            if out is not None and not overwrite and output_done(out):
                todo.append((rec, out, None))
                continue
        except UserError as e:
            rec["error"] = str(e)
            todo.append((rec, out, None))
            continue
        source = sys.stdin.buffer.read() if item.path is None else item.path
        title = item.path.stem if item.path is not None else ""
        todo.append((rec, out, (source, 1 if out is not None else x, title, opts)))

    tasks = [t for _, _, t in todo if t is not None]
    results = _results(tasks, min(jobs, len(tasks)))
    for rec, out, task in progress(todo, total=len(todo), desc="midi2abc"):
        if task is None and not rec["error"]:
            print(f"abcscribe: {out} exists, skipped (--overwrite replaces it)", file=sys.stderr)
            if jsonl:
                rec["abc"] = out.read_text(encoding="utf-8", errors="replace")
                emit(rec)
            continue
        abc, error, warnings = next(results) if task is not None else (None, rec["error"], [])
        for w in warnings:
            print(f"abcscribe: warning: {rec['path']}: {w}", file=sys.stderr)
        with batch.guard(rec):
            if error is not None:
                raise UserError(error)
            rec["abc"] = abc
            if out is not None:
                atomic_write(out, abc)
        if jsonl:
            emit(rec)
        elif out is None and rec["abc"] is not None:
            sys.stdout.write(("" if first else "\n") + rec["abc"])
            sys.stdout.flush()
            first = False
    batch.finish()


def _convert(task) -> tuple[str | None, str | None, list[str]]:
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


def _results(tasks: list, jobs: int, convert=_convert) -> Iterator[tuple[str | None, str | None, list[str]]]:
    """``_convert`` of each task, in order: in this process, or in ``jobs`` forked workers
    (``main`` has imported the reader and writer already, so a worker starts in milliseconds).
    A worker that dies (the out-of-memory killer) ends the batch with a UserError."""
    if jobs <= 1:
        yield from map(convert, tasks)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing

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


def _parse_grid(text: str) -> int | None:
    t = text.strip().lower()
    if t in ("none", "off", "0"):
        return None
    if not t.isdigit() or int(t) < 1 or int(t) > 256:
        raise UserError(f"--grid must be notes per whole note (e.g. 16) or none, got {text!r}")
    return int(t)
