"""abcscribe abc2midi: an ABC tune to a MIDI (or MusicXML) file, through abcscribe's own
tolerant reader."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import warn
from abcscribe.core.errors import UserError


def main(
    abc_file: str = typer.Argument(..., metavar="FILE.abc", help="ABC file, or - for stdin."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", metavar="OUT.mid",
        help="File to write (default: FILE.mid, or FILE.musicxml with --format musicxml, beside "
        "the input; required for stdin).",
    ),
    fmt: str = typer.Option(
        "auto", "--format", metavar="midi|musicxml",
        help="What to write: midi, musicxml (for score editors: parts named, instruments and "
        "MIDI programs kept), or auto (from OUT's suffix: .musicxml or .xml is MusicXML).",
    ),
    tune: Optional[int] = typer.Option(
        None, "--tune", metavar="N",
        help="In a file of several tunes, the one whose X: field is N (default: the first).",
    ),
    overwrite: bool = typer.Option(
        True, "--overwrite/--no-overwrite",
        help="Replace OUT.mid when it exists (default) or stop with an error.",
    ),
) -> None:
    """Read one ABC tune (repeats expanded, voices, tempo and instruments kept) and write it
    as a type 1 MIDI file, or MusicXML. Parse warnings go to stderr; the file is written even
    when the ABC is partly malformed, from whatever could be read."""
    from abcscribe.core.abc import read_abc, read_abc_tunes, tune_numbers
    from abcscribe.core.files import check_output_file
    from abcscribe.core.midi import write_midi

    fmt = fmt.strip().lower()
    if fmt not in ("auto", "midi", "musicxml"):
        raise UserError(f"--format must be auto, midi or musicxml, got {fmt!r}")
    if fmt == "auto":
        xml = output is not None and output.suffix.lower() in (".musicxml", ".xml")
        fmt = "musicxml" if xml else "midi"
    if abc_file == "-":
        data = sys.stdin.buffer.read()
        if output is None:
            raise UserError("reading from stdin needs -o OUT.mid")
    else:
        path = Path(abc_file)
        if not path.is_file():
            raise UserError(f"{abc_file}: no such file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"{abc_file}: cannot read ({e.strerror or e})") from None
        if output is None:
            output = path.with_suffix(".musicxml" if fmt == "musicxml" else ".mid")
    check_output_file(output, "-o")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists (--overwrite replaces it)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # old ABC collections are often Latin-1
    if "\x00" in text:
        raise UserError(f"{abc_file}: not ABC text (binary data)")

    if tune is None:
        piece, warnings = read_abc(text)
    else:
        numbers = tune_numbers(text)
        if tune not in numbers:
            shown = ", ".join(str(n) for n in numbers[:20] if n is not None) or "none"
            raise UserError(f"{abc_file}: no tune with X:{tune} (found X: {shown})")
        piece, warnings = read_abc_tunes(text)[numbers.index(tune)]
    for w in warnings:
        warn(f"{abc_file}: {w}")
    if piece.note_count == 0:
        raise UserError(f"{abc_file}: no notes found in the ABC")
    if fmt == "musicxml":
        from abcscribe.core.files import atomic_write
        from abcscribe.core.musicxml import write_musicxml

        atomic_write(output, write_musicxml(piece))
    else:
        write_midi(piece, output)
    print(f"abcscribe: wrote {output} ({piece.note_count} notes, {len(piece.voices)} voices, "
          f"{piece.duration_seconds:.1f} s)", file=sys.stderr)
