"""Build the demo corpus: folk tunes (and optionally Bach chorales) from music21's installed
corpus, each given a tempo and a General MIDI instrument, written as MIDI files.

    python examples/corpus.py --pieces 200 --out runs/demo/midi

Tunes come from O'Neill's 1850 collection (ABC, read with abcscribe's own reader), then Ryan's
Mammoth Collection; chorales from music21's Bach, each voice given its own instrument. Choices are
seeded (each piece's tempo and instruments by its name), so the same arguments give the same
files, and ``--skip-pieces``/``--skip-chorales`` give the pieces after another run's."""

from __future__ import annotations

import argparse
import bisect
import random
import sys
from pathlib import Path

from abcscribe.core.abc import read_abc_tunes
from abcscribe.core.midi import read_midi, write_midi
from abcscribe.core.notes import Tempo

# A handful of GM programs from distinct families: piano, organ, guitar, strings, brass, reed,
# pipe. The instrument question then has a real answer to learn.
DEFAULT_PROGRAMS = "0,19,24,40,56,71,73"
COLLECTIONS = ("oneills1850", "ryansMammoth")


def tunes(limit: int):
    """(name, Piece) for readable, single-voice tunes with notes, in a fixed order."""
    from music21 import corpus

    for coll in COLLECTIONS:
        paths = sorted(p for p in corpus.getPaths() if f"/{coll}/" in str(p) and str(p).endswith(".abc"))
        for path in paths:
            text = Path(path).read_text(encoding="latin-1")
            for i, (piece, _warnings) in enumerate(read_abc_tunes(text)):
                if piece.note_count < 16 or len(piece.voices) != 1:
                    continue
                yield f"{coll}-{Path(path).stem}-{i + 1:03d}", piece
                limit -= 1
                if limit <= 0:
                    return


def chorales(limit: int):
    """(name, Piece) for Bach chorales from music21's corpus (MusicXML -> MIDI -> Piece)."""
    import tempfile

    from music21 import corpus

    for path in sorted(corpus.getComposer("bach"))[: limit * 3]:
        if limit <= 0:
            return
        try:
            score = corpus.parse(path)
            with tempfile.TemporaryDirectory() as tmp:
                mid = Path(tmp) / "c.mid"
                score.write("midi", fp=str(mid))
                piece = read_midi(mid)
        except Exception as e:  # a corpus file music21 cannot export: skip it
            print(f"corpus: skipping {Path(path).name}: {e}", file=sys.stderr)
            continue
        if len(piece.voices) < 2:
            continue
        yield f"bach-{Path(path).stem}", piece
        limit -= 1


def accent(piece, levels: tuple[int, int, int]) -> None:
    """Give each note the velocity of its place in the bar, as a player stresses it (and abc2midi
    does by default): ``levels`` = (a bar's first beat, its other beats, the rest), the beats
    those of ``Meter.beat_ticks`` (6/8 beats every three eighths)."""
    first, beat, other = levels
    starts = piece.bar_starts()
    for v in piece.voices:
        for i, n in enumerate(v.notes):
            step = piece.meter_at(n.start).beat_ticks
            pos = n.start - starts[bisect.bisect_right(starts, n.start) - 1]
            v.notes[i] = type(n)(n.pitch, n.start, n.duration, first if pos == 0 else beat if pos % step == 0 else other)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=200, help="folk tunes to take")
    ap.add_argument("--chorales", type=int, default=0, help="Bach chorales to add")
    ap.add_argument("--out", required=True, help="folder for the .mid files")
    ap.add_argument("--programs", default=DEFAULT_PROGRAMS, help="GM programs to draw from")
    ap.add_argument("--tempo", default="70-160", help="BPM range, e.g. 70-160")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pieces", type=int, default=0,
                    help="leave out the first N tunes (another run's: pieces it never saw)")
    ap.add_argument("--skip-chorales", type=int, default=0, help="leave out the first N chorales")
    ap.add_argument("--accents", default="",
                    help="velocities of a bar's first beat, its other beats and the rest, e.g. "
                         "105,95,80 (abc2midi's default); empty: every note as the source gives it")
    args = ap.parse_args(argv)
    try:
        levels = tuple(int(x) for x in args.accents.split(",")) if args.accents else None
    except ValueError:
        levels = ()
    if levels is not None and (len(levels) != 3 or not all(1 <= x <= 127 for x in levels)):
        ap.error("--accents takes three velocities from 1 to 127, e.g. 105,95,80")

    lo, hi = (float(x) for x in args.tempo.split("-"))
    programs = [int(p) for p in args.programs.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    chosen = (list(tunes(args.skip_pieces + args.pieces))[args.skip_pieces:] if args.pieces else []) \
        + (list(chorales(args.skip_chorales + args.chorales))[args.skip_chorales:] if args.chorales else [])
    for name, piece in chosen:
        rng = random.Random(f"{args.seed}:{name}")
        bpm = float(round(rng.uniform(lo, hi)))
        piece.tempos = [Tempo(0, bpm)]
        program = rng.choice(programs)
        # several voices: each its own instrument (distinct while the list lasts), so the
        # answer has one V: per instrument as a musician would write it
        voice_programs = rng.sample(programs, len(piece.voices)) if len(piece.voices) <= len(programs) \
            else [rng.choice(programs) for _ in piece.voices]
        # MIDI cannot say "this starts with a pickup": pad the pickup to a full bar with a rest
        # so bar lines read back from the MIDI fall where the tune's bar lines are.
        pad = 0
        if piece.anacrusis:
            pad = piece.meter_at(0).bar_ticks - piece.anacrusis
            piece.meters = [type(m)(m.tick + pad if m.tick else 0, m.numerator, m.denominator) for m in piece.meters]
            piece.anacrusis = 0
        for v, prog in zip(piece.voices, voice_programs if len(piece.voices) > 1 else [program]):
            v.program, v.drum, v.name = prog, False, ""
            v.notes = [type(n)(n.pitch, n.start + pad, n.duration, n.velocity) for n in v.notes if n.duration > 0]
        if levels:
            accent(piece, levels)
        piece.title = name
        write_midi(piece, out / f"{name}.mid")
        n += 1
    print(f"corpus: wrote {n} pieces to {out}", file=sys.stderr)
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
