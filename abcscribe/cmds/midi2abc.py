"""abcscribe midi2abc: MIDI files to ABC notation (exact notes: ties, chords, tuplets).

The options are ``Midi2ABCOptions``' fields and the batch is ``convert_files``, both in
``core.midi2abc``; the notation is ``core.abc.write_abc``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import exit_with, freeze_imports, options_of
from abcscribe.core.midi2abc import Midi2ABCOptions


def _main(
    inputs: List[str] = typer.Argument(..., metavar="FILE|DIR|-...", help="MIDI files, folders of them (walked recursively, sorted), or - for one MIDI file on stdin."),
    output_dir: Optional[Path] = typer.Option(None, "-o", "--output-dir", metavar="DIR", help="Write one .abc per input into DIR, mirroring the inputs' sub-folders (default: all tunes on stdout)."),
    opts: Midi2ABCOptions = None,
) -> None:
    """Convert MIDI to ABC: one tune per input (X: numbered in input order) on stdout, one .abc
    per input with -o DIR, or JSONL records with --jsonl. Files longer than 100,000 quarter
    notes (a corrupt delta time) are refused with an error."""
    from abcscribe.core.midi2abc import convert_files
    import abcscribe.core.abc, abcscribe.core.midi  # noqa: E401, F401  (imported before the freeze)

    freeze_imports()  # with the reader's and writer's imports too
    exit_with(convert_files(inputs, output_dir, opts, out=sys.stdout))


main = options_of(Midi2ABCOptions, _main)
