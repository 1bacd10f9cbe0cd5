"""abcscribe abc2midi: an ABC tune to a MIDI (or MusicXML) file, through abcscribe's own
tolerant reader.

The options are ``ABC2MIDIOptions``' fields and the work is ``export_tune``, both in
``core.abc2midi``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import options_of
from abcscribe.core.abc2midi import ABC2MIDIOptions


def _main(
    abc_file: str = typer.Argument(..., metavar="FILE.abc", help="ABC file, or - for stdin."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="OUT.mid", help="File to write (default: FILE.mid, or FILE.musicxml with --format musicxml, beside the input; required for stdin)."),
    opts: ABC2MIDIOptions = None,
) -> None:
    """Read one ABC tune (repeats expanded, voices, tempo and instruments kept) and write it
    as a type 1 MIDI file, or MusicXML. Parse warnings go to stderr; the file is written even
    when the ABC is partly malformed, from whatever could be read."""
    from abcscribe.core.abc2midi import export_tune

    export_tune(abc_file, output, opts)


main = options_of(ABC2MIDIOptions, _main)
