"""One ABC tune to a MIDI or MusicXML file: ``ABC2MIDIOptions`` (every option of ``abcscribe
abc2midi``, declared once) and ``export_tune``. The reading is ``core.abc``'s tolerant reader."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option

FORMATS = ("auto", "midi", "musicxml")


@dataclass(frozen=True)
class ABC2MIDIOptions:
    """Every option of ``abcscribe abc2midi`` but the files: name, default, help and rule,
    declared once."""

    format: str = option("auto", "What to write: midi, musicxml (for score editors: parts named, instruments and MIDI programs kept), or auto (from OUT's suffix: .musicxml or .xml is MusicXML).", choices=FORMATS)
    tune: int | None = option(None, "In a file of several tunes, the one whose X: field is N (default: the first).", metavar="N", min=0)
    overwrite: bool = option(True, "Replace OUT.mid when it exists (default) or stop with an error.", flags=["--overwrite/--no-overwrite"])

    def check(self) -> None:
        check_options(self)


def export_tune(abc_file: str, output: Path | None, opts: ABC2MIDIOptions) -> Path:
    """Read one tune of ``abc_file`` (``-``: stdin) and write it to ``output`` (default: beside
    the input, .mid or .musicxml) as a type 1 MIDI file or MusicXML. Parse warnings go to
    stderr; the file is written even when the ABC is partly malformed, from whatever could be
    read. Returns the path written; a UserError for what cannot be exported."""
    from abcscribe.core.files import check_output_file, warn

    opts.check()
    fmt = opts.format
    if fmt == "auto":
        xml = output is not None and output.suffix.lower() in (".musicxml", ".xml")
        fmt = "musicxml" if xml else "midi"
    if abc_file == "-":
        if output is None:
            raise UserError("reading from stdin needs -o OUT.mid")
        data = sys.stdin.buffer.read()
    else:
        path = Path(abc_file)
        if not path.is_file():
            raise UserError(f"{abc_file}: no such file")
        if output is None:
            output = path.with_suffix(".musicxml" if fmt == "musicxml" else ".mid")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"{abc_file}: cannot read ({e.strerror or e})") from None
    check_output_file(output, "-o")
    if output.exists() and not opts.overwrite:
        raise UserError(f"{output} exists (--overwrite replaces it)")
    piece = read_tune(abc_file, data, opts.tune, warn)
    if fmt == "musicxml":
        from abcscribe.core.files import atomic_write
        from abcscribe.core.musicxml import write_musicxml

        atomic_write(output, write_musicxml(piece))
    else:
        from abcscribe.core.midi import write_midi

        write_midi(piece, output)
    print(f"abcscribe: wrote {output} ({piece.note_count} notes, {len(piece.voices)} voices, "
          f"{piece.duration_seconds:.1f} s)", file=sys.stderr)
    return output


def read_tune(name: str, data: bytes, tune: int | None, warn):
    """The Piece of tune X:``tune`` (None: the first) in ABC ``data`` (UTF-8, else Latin-1);
    its parse warnings through ``warn``; a UserError for binary data, a missing X:, no notes."""
    from abcscribe.core.abc import read_abc, read_abc_tunes, tune_numbers

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # old ABC collections are often Latin-1
    if "\x00" in text:
        raise UserError(f"{name}: not ABC text (binary data)")
    if tune is None:
        piece, warnings = read_abc(text)
    else:
        numbers = tune_numbers(text)
        if tune not in numbers:
            shown = ", ".join(str(n) for n in numbers[:20] if n is not None) or "none"
            raise UserError(f"{name}: no tune with X:{tune} (found X: {shown})")
        piece, warnings = read_abc_tunes(text)[numbers.index(tune)]
    for w in warnings:
        warn(f"{name}: {w}")
    if piece.note_count == 0:
        raise UserError(f"{name}: no notes found in the ABC")
    return piece
