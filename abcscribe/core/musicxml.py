"""Piece -> MusicXML 4.0 (partwise), for score editors such as MuseScore.

The notes are laid out exactly as the ABC writer lays them out (the same bars, ties, tuplets
and note values, overlapping notes of a track as voices of one part), so ABC and MusicXML of a
piece show the same score. Each part names its instrument and MIDI program; the file carries
the title and no date, so the same piece gives the same bytes.
"""

from __future__ import annotations

from fractions import Fraction
from xml.sax.saxutils import escape

from abcscribe.core.abc.keys import _LETTERS
from abcscribe.core.abc.writer import DEFAULT_UNIT, STAFF_VOICES, _clef, _voice_notes, _Writer
from abcscribe.core.gm import program_name
from abcscribe.core.notes import Piece

_TYPES = {Fraction(2): "breve", Fraction(1): "whole", Fraction(1, 2): "half",
          Fraction(1, 4): "quarter", Fraction(1, 8): "eighth", Fraction(1, 16): "16th",
          Fraction(1, 32): "32nd", Fraction(1, 64): "64th", Fraction(1, 128): "128th",
          Fraction(1, 256): "256th"}


def _note_type(value: Fraction) -> tuple[str, int]:
    """(type, dots) of a written value in whole notes (plain, dotted or double dotted)."""
    for dots, scale in ((0, Fraction(1)), (1, Fraction(3, 2)), (2, Fraction(7, 4))):
        t = _TYPES.get(value / scale)
        if t is not None:
            return t, dots
    base = Fraction(2)
    while base > value and base > Fraction(1, 256):
        base /= 2
    return _TYPES[base], 0


def write_musicxml(piece: Piece, *, title: str | None = None) -> bytes:
    """MusicXML of ``piece``: one part per voice (its name, instrument and MIDI program),
    overlapping notes as voices within the part."""
    w = _Writer(piece, _voice_notes(piece), DEFAULT_UNIT, None, "voices", 4)
    m0 = piece.meter_at(0)
    w.beat = max(1, w.tpq * 4 // m0.denominator)
    bars, tempos, tempo_at, meter_at, staves = w.plan()
    whole = 4 * w.tpq
    t = " ".join(str(title if title is not None else piece.title or "").split())
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" '
           '"http://www.musicxml.org/dtds/partwise.dtd">',
           '<score-partwise version="4.0">']
    if t:
        out.append(f"  <work><work-title>{escape(t)}</work-title></work>")
    out.append("  <identification><encoding><software>abcscribe</software></encoding>"
               "</identification>")
    # a part per track, or per four of its layers (a staff holds four voices)
    parts = [(vi, layer // STAFF_VOICES) for vi, _, layer, _, _ in staves
             if layer % STAFF_VOICES == 0]
    out.append("  <part-list>")
    channel = 0
    for n, (vi, extra) in enumerate(parts):
        v = piece.voices[vi]
        pid = f"P{n + 1}"
        instrument = program_name(v.program, v.drum)
        if v.drum:
            ch = 10
        else:
            channel += 1 + (channel + 1 == 10)
            ch = (channel - 1) % 16 + 1
        out += [f'    <score-part id="{pid}">',
                f"      <part-name>{escape(v.name or instrument)}"
                + (f" ({extra + 1})" if extra else "") + "</part-name>",
                f'      <score-instrument id="{pid}-I1">'
                f"<instrument-name>{escape(instrument)}</instrument-name></score-instrument>",
                f'      <midi-instrument id="{pid}-I1"><midi-channel>{ch}</midi-channel>'
                + ("" if v.drum else f"<midi-program>{int(v.program) + 1}</midi-program>")
                + "</midi-instrument>",
                "    </score-part>"]
    out.append("  </part-list>")
    fifths = w.key.fifths if w.key is not None else 0
    mode = w.key.mode if w.key is not None and w.key.mode in ("major", "minor") else "major"
    pickup = piece.anacrusis > 0
    for n, (vi, extra) in enumerate(parts):
        v = piece.voices[vi]
        layers = [st for st in staves if st[0] == vi and st[2] // STAFF_VOICES == extra]
        pitches = [x for st in staves if st[0] == vi for x in st[4]]
        clef = ("percussion", 2) if v.drum else (("F", 4) if _clef(pitches) else ("G", 2))
        out.append(f'  <part id="P{n + 1}">')
        cursors = [0] * len(layers)  # each layer's next segment
        carries = [frozenset()] * len(layers)  # pitches tied into the bar
        for bi, (b0, b1) in enumerate(bars):
            number = bi if pickup else bi + 1
            implicit = ' implicit="yes"' if pickup and bi == 0 else ""
            out.append(f'    <measure number="{number}"{implicit}>')
            m = meter_at.get(b0)
            if bi == 0:
                out.append(f"      <attributes><divisions>{w.tpq}</divisions>"
                           f"<key><fifths>{fifths}</fifths><mode>{mode}</mode></key>"
                           f"<time><beats>{m0.numerator}</beats>"
                           f"<beat-type>{m0.denominator}</beat-type></time>"
                           f"<clef><sign>{clef[0]}</sign><line>{clef[1]}</line></clef>"
                           "</attributes>")
            elif m is not None:
                out.append(f"      <attributes><time><beats>{m.numerator}</beats>"
                           f"<beat-type>{m.denominator}</beat-type></time></attributes>")
            for k, st in enumerate(layers):
                segs = st[3]
                j = cursors[k]
                a = j
                while j < len(segs) and segs[j][0] < b1:
                    j += 1
                cursors[k] = j
                if k:
                    out.append(f"      <backup><duration>{b1 - b0}</duration></backup>")
                tempo = {}
                if n == 0 and k == 0:
                    tempo = dict(tempo_at)
                    if bi == 0:
                        tempo[b0] = tempos[0].bpm if tempos[0].tick == 0 else 120.0
                groups = w.bar_groups(segs[a:j], b0, b1, bi == 0 and pickup)
                carries[k] = _bar_notes(out, w, groups, k + 1, carries[k], tempo, whole)
            out.append("    </measure>")
        out.append("  </part>")
    out.append("</score-partwise>")
    return ("\n".join(out) + "\n").encode("utf-8")


def _bar_notes(out, w, groups, voice, carry, tempo, whole) -> frozenset:
    """Append one bar of one voice's notes; returns the pitches tied into the next bar."""
    prev_tied = carry
    for tup, gsegs in groups:
        p, q = tup if tup is not None else (1, 1)
        for i, (s, e, ps, tied) in enumerate(gsegs):
            if s in tempo:
                bpm = tempo[s]
                out.append('      <direction placement="above"><direction-type><metronome>'
                           f"<beat-unit>quarter</beat-unit><per-minute>{bpm:g}</per-minute>"
                           f'</metronome></direction-type><sound tempo="{bpm:g}"/></direction>')
            kind, dots = _note_type(Fraction((e - s) * p, q * whole))
            tail = [f"<voice>{voice}</voice><type>{kind}</type>" + "<dot/>" * dots]
            if tup is not None:
                tail.append(f"<time-modification><actual-notes>{p}</actual-notes>"
                            f"<normal-notes>{q}</normal-notes></time-modification>")
            bracket = ""
            if tup is not None and i == 0:
                bracket = '<tuplet type="start"/>'
            elif tup is not None and i == len(gsegs) - 1:
                bracket = '<tuplet type="stop"/>'
            if not ps:
                hide = "" if voice == 1 else ' print-object="no"'
                note = (f"      <note{hide}><rest/><duration>{e - s}</duration>" + "".join(tail)
                        + (f"<notations>{bracket}</notations>" if bracket else "") + "</note>")
                out.append(note)
                prev_tied = frozenset()
                continue
            for n, x in enumerate(ps):
                li, acc, octave = w.pitch[x][:3]
                alter = f"<alter>{acc}</alter>" if acc else ""
                ties, tied_marks = "", ""
                if x in prev_tied:
                    ties += '<tie type="stop"/>'
                    tied_marks += '<tied type="stop"/>'
                if x in tied:
                    ties += '<tie type="start"/>'
                    tied_marks += '<tied type="start"/>'
                marks = tied_marks + (bracket if n == 0 else "")
                out.append("      <note>" + ("<chord/>" if n else "")
                           + f"<pitch><step>{_LETTERS[li]}</step>{alter}<octave>{octave}</octave>"
                           f"</pitch><duration>{e - s}</duration>{ties}" + "".join(tail)
                           + (f"<notations>{marks}</notations>" if marks else "") + "</note>")
            prev_tied = tied
    return prev_tied
