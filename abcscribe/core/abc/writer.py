"""Piece -> ABC text: bars, ties, tuplets and note values an engraver reads; overlapping notes
of a track as voices sharing its staff."""

from __future__ import annotations

import functools
import gc
import math
import re
from bisect import bisect_left, bisect_right
from fractions import Fraction

from abcscribe.core.abc.keys import (
    _ACC_TEXT,
    _key_from_histogram,
    _note_text,
    _spelling,
    key_text,
    parse_key,
    signature,
)
from abcscribe.core.errors import UserError
from abcscribe.core.gm import program_name
from abcscribe.core.notes import TPQ, Key, Piece, Tempo

DEFAULT_UNIT = (1, 16)
LAYOUTS = ("voices", "interleaved")


# ---- writer --------------------------------------------------------------------------------
_NO_TIES: frozenset = frozenset()


@functools.lru_cache(maxsize=256)
def _pitch_table(sig: tuple[int, ...], fifths: int) -> tuple[tuple, ...]:
    """Per MIDI pitch under a key signature: (letter, accidental, octave, text without
    accidental, number of (letter, octave) (>= 7, so apart from letter numbers), text with
    accidental, True when the key's own accidental, bit of the letter)."""
    spell = _spelling(sig, fifths)
    table = []
    for p in range(128):
        li, acc = spell[p % 12]
        octave = (p - acc) // 12 - 1
        txt = _note_text(li, octave)
        table.append((li, acc, octave, txt, 7 * octave + li + 21, _ACC_TEXT[acc] + txt,
                      acc == sig[li], 1 << li))
    return tuple(table)


def _length_text(num: int, den: int, unit: int) -> str:
    """Text for a duration of ``num/den`` ticks written in units of L (``unit`` ticks)."""
    n, d = num, den * unit
    g = math.gcd(n, d)
    n, d = n // g, d // g
    if d == 1:
        return "" if n == 1 else str(n)
    if d & (d - 1):  # not a power of two: cannot happen after tuplet handling
        n2 = max(1, round(n * 64 / d))
        return _length_text(n2 * unit, 64, unit)
    if n == 1:
        return "/" if d == 2 else f"/{d}"
    return f"{n}/{d}"


class _Lengths(dict):
    """Length text of a plain duration in ticks, computed on first use."""

    def __init__(self, unit: int):
        super().__init__()
        self.unit = unit

    def __missing__(self, ticks: int) -> str:
        s = self[ticks] = _length_text(ticks, 1, self.unit)
        return s


class _NoteValues(dict):
    """Whether a length in ticks is one written note (``_is_note_value``), on first use."""

    def __init__(self, whole: int):
        super().__init__()
        self.whole = whole

    def __missing__(self, ticks: int) -> bool:
        ok = self[ticks] = _is_note_value(ticks, self.whole)
        return ok


def _odd_part(n: int) -> int:
    while n and n % 2 == 0:
        n //= 2
    return n or 1


def _pow2_below(p: int) -> int:
    q = 1
    while q * 2 < p:
        q *= 2
    return q


@functools.lru_cache(maxsize=4096)
def _is_note_value(num: int, den: int) -> bool:
    """True when ``num/den`` of a whole note is one written note: a power of two from 1/256 to
    a breve, plain, dotted or double dotted."""
    f = Fraction(num, den)
    n, d = f.numerator, f.denominator
    return (d & (d - 1) == 0 and n in (1, 2, 3, 7) and f <= 3 and d <= 256 * (n // 2 + 1)
            and num > 0)


@functools.lru_cache(maxsize=4096)
def _tuplet_split(s: int, e: int, p: int, q: int, whole: int) -> list[int]:
    """[s, cut points..., e]: ``e - s`` ticks played as ``p`` in the time of ``q`` cut into
    written note values, largest first; [s, e] when the pieces do not fall on whole ticks."""
    written = Fraction((e - s) * p, q * whole)  # of a whole note
    bounds, t = [s], Fraction(s)
    while written > 0:
        v = Fraction(2, 1)
        while v > written:
            v /= 2
        if v < Fraction(1, 256):
            return [s, e]
        written -= v
        t += v * whole * q / p
        if t.denominator != 1:
            return [s, e]
        bounds.append(int(t))
    return bounds


STAFF_VOICES = 4  # voices on one staff (abcm2ps stops at five)


def _split_layers(notes: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Sorted (start, pitch, duration) notes that overlap as layers that do not: notes
    starting and ending together stay one chord; each chord goes to the first layer free at
    its start. A new onset of a pitch still sounding ends the earlier note first."""
    clean: list[list[int]] = []
    last: dict[int, list[int]] = {}
    for s, pch, d in notes:
        prev = last.get(pch)
        if prev is not None and prev[0] + prev[2] > s:
            if prev[0] == s:
                prev[2] = max(prev[2], d)
                continue
            prev[2] = s - prev[0]
        rec = [s, pch, d]
        clean.append(rec)
        last[pch] = rec
    chords: dict[tuple[int, int], list[int]] = {}
    for s, pch, d in clean:
        chords.setdefault((s, s + d), []).append(pch)
    layers: list[list[tuple[int, int, int]]] = []
    ends: list[int] = []
    # longer chords first among those starting together: the longest notes share a layer
    for (s, e), ps in sorted(chords.items(), key=lambda c: (c[0][0], -c[0][1])):
        k = next((i for i, end in enumerate(ends) if end <= s), len(ends))
        if k == len(ends):
            layers.append([])
            ends.append(0)
        layers[k].extend((s, pch, e - s) for pch in sorted(ps))
        ends[k] = e
    return layers


def _clef(pitches: list[int]) -> str:
    """`` clef=bass`` for a voice that sits mostly below middle C, else nothing (treble)."""
    pitches = sorted(pitches)
    if pitches and pitches[len(pitches) // 2] < 57:
        return " clef=bass"
    return ""


_LINE_SYMBOLS = 25  # notes, rests and chords that fit on one engraved line of abcm2ps


def _line_groups(weights: list[list[int]], most: int) -> list[tuple[int, int]]:
    """Bars [a, b) of each line of music, from each voice's symbols (notes, rests, chords) per
    bar: at most ``most`` bars, fewer where the busiest voice would crowd the line (the same
    lines for every voice, so systems line up)."""
    weight = [max(w) for w in zip(*weights)] if weights else []
    nb = len(weight)
    groups, a = [], 0
    while a < nb:
        b, used = a + 1, weight[a]
        while b < nb and b - a < most and used + weight[b] <= _LINE_SYMBOLS:
            used += weight[b]
            b += 1
        groups.append((a, b))
        a = b
    return groups


def _tempo_text(bpm: float) -> str:
    """``Q:`` value; picks a beat unit that keeps a non-integral tempo exact when it can."""
    for beat, mul in ((4, 1), (8, 2), (16, 4), (2, 0.5)):
        v = bpm * mul
        if v >= 1 and abs(v - round(v)) < 0.01:
            return f"1/{beat}={int(round(v))}"
    return f"1/4={max(1, int(round(bpm)))}"


def _bar_starts(p: Piece, end: int) -> list[int]:
    """``p.bar_starts(end)`` without a search per bar when the piece has one meter."""
    ms = p.meters
    if len(ms) == 1 and ms[0].tick == 0:
        bt = ms[0].bar_ticks
        if bt > 0:
            starts = [0]
            t = p.anacrusis if p.anacrusis > 0 else 0
            if t > 0:
                starts.append(t)
            starts.extend(range(t + bt, end, bt))
            return starts
    return p.bar_starts(end)


class _Writer:
    def __init__(self, piece: Piece, voice_notes, unit, key, layout, bars_per_line):
        self.p = piece
        self.voice_notes = voice_notes  # per voice, _voice_notes
        self.tpq = piece.tpq or TPQ
        num, den = unit
        ut = self.tpq * 4 * num
        if ut % den:
            raise UserError(f"unit {num}/{den} does not fit {self.tpq} ticks per quarter")
        self.unit = ut // den
        self.odd = _odd_part(self.tpq)
        self.layout = layout
        self.bpl = max(1, int(bars_per_line))
        # key signature
        if isinstance(key, str):
            if key.strip().lower() in ("auto", ""):
                key = None
            else:
                k, sig, ok = parse_key(key)
                if not ok:
                    raise UserError(f"not a key: {key!r} (try G, Am, Ddor or none)")
                self.key, self.sig, self.ktext = k, sig, ("none" if k is None else key.strip())
                key = False
        if key is not False:
            if key is None:
                key = piece.key if piece.key is not None else self._estimate_key()
            self.key = key
            self.sig = signature(key.fifths)
            self.ktext = key_text(key)
        fifths = self.key.fifths if self.key is not None else 0
        self.pitch = _pitch_table(tuple(self.sig), fifths)
        self.plain_len = _Lengths(self.unit)  # length() of whole ticks, keyed by ticks
        self.chord_info: dict[tuple, tuple] = {}  # _chord_at_start() per chord
        self.len_cache: dict[tuple[int, int], str] = {}
        self._splitters: dict[tuple[int, int], object] = {}  # _metric_split per meter
        self.plain_ok = _NoteValues(4 * self.tpq)  # ticks -> whether one written note

    def _estimate_key(self) -> Key:
        """``keys.estimate_key`` of the notes the writer places."""
        hist = [0.0] * 12
        for v, notes in zip(self.p.voices, self.voice_notes):
            if not v.drum:
                for _, p, d in notes:
                    hist[p % 12] += d
        return _key_from_histogram(hist)

    # -- durations
    def length(self, num: int, den: int = 1) -> str:
        """Text for a duration of ``num/den`` ticks written in units of L."""
        k = (num, den)
        s = self.len_cache.get(k)
        if s is None:
            s = self.len_cache[k] = _length_text(num, den, self.unit)
        return s

    # -- timeline
    def bars(self) -> list[tuple[int, int]]:
        p = self.p
        end = max([max([s + d for s, _, d in notes]) for notes in self.voice_notes if notes],
                  default=0)
        if end <= 0:
            return []
        starts = [s for s in _bar_starts(p, end) if s < end] or [0]
        meter_ticks = sorted(m.tick for m in p.meters)
        out = []
        for i, s in enumerate(starts):
            if i + 1 < len(starts):
                e = starts[i + 1]
            else:
                e = s + (p.meter_at(s).bar_ticks if not (i == 0 and p.anacrusis > 0) else p.anacrusis)
                j = bisect_right(meter_ticks, s)
                if j < len(meter_ticks) and meter_ticks[j] < e:
                    e = meter_ticks[j]
                if e < end:  # the pickup was all there is before the end: one more bar
                    out.append((s, e))
                    s, e = e, e + p.meter_at(e).bar_ticks
            out.append((s, e))
        return out

    def layers(self, vi: int, cuts: list[int], total_end: int) -> list[tuple[list, list]]:
        """Voice ``vi`` as one or more layers, each [(start, end, pitches, tied pitches)]
        (rests as ()) with its notes' pitches: one layer when its notes form
        chords (same start, same end) that follow one another, else as many layers as the
        overlaps need (a new onset of a sounding pitch ends the earlier note)."""
        notes = self.voice_notes[vi]
        segs = self._chord_segments(notes, cuts, total_end)
        if segs is not None:
            return [(segs, [p for _, p, _ in notes])]
        return [(self._chord_segments(layer, cuts, total_end), [p for _, p, _ in layer])
                for layer in _split_layers(notes)]

    @staticmethod
    def _chord_segments(clean, cuts, total_end):
        """``segments`` for the common voice whose notes (sorted by start, pitch) form chords
        (same start, same end) that do not overlap one another: a walk over the chords instead of
        the sweep over every boundary. None when the voice is not like that."""
        n = len(clean)
        groups = []  # (start, end, pitches ascending)
        i = 0
        prev_end = 0
        while i < n:
            s, p0, d = clean[i]
            e = s + d
            if s < prev_end:
                return None
            j = i + 1
            while j < n and clean[j][0] == s:
                if clean[j][0] + clean[j][2] != e:
                    return None
                j += 1
            if j - i == 1:
                groups.append((s, e, (p0,)))
            else:  # pitches come ascending; the same pitch twice sounds once
                ps = tuple([c[1] for c in clean[i:j]])
                if len(set(ps)) != len(ps):
                    ps = tuple(sorted(set(ps)))
                groups.append((s, e, ps))
            prev_end = e
            i = j
        cs = sorted(c for c in set(cuts) if 0 < c < total_end)
        ci, nc = 0, len(cs)
        segs = []
        empty: frozenset = frozenset()
        t = 0
        for s, e, ps in groups:
            # rests from t to s, cut at the cut points
            while t < s:
                while ci < nc and cs[ci] <= t:
                    ci += 1
                b = cs[ci] if ci < nc and cs[ci] < s else s
                segs.append((t, b, (), empty))
                t = b
            tied = None
            while t < e:
                while ci < nc and cs[ci] <= t:
                    ci += 1
                if ci < nc and cs[ci] < e:
                    b = cs[ci]
                    if tied is None:
                        tied = frozenset(ps)
                    segs.append((t, b, ps, tied))
                else:
                    b = e
                    segs.append((t, b, ps, empty))
                t = b
        while t < total_end:
            while ci < nc and cs[ci] <= t:
                ci += 1
            b = cs[ci] if ci < nc else total_end
            segs.append((t, b, (), empty))
            t = b
        return segs

    # -- one bar of one voice
    def bar_text(self, segs, b0, b1, pickup, tempo_at, lead, carry=_NO_TIES,
                 on_grid=False, rest="z") -> str:
        """One bar of one voice. ``on_grid``: the caller knows that every segment starts and
        ends on the plain grid (no tuplets needed); ``rest``: z, or x (unseen) for a layer
        that shares its staff."""
        groups = self.bar_groups(segs, b0, b1, pickup, on_grid)
        self.symbols = sum([len(g) for _, g in groups])  # for the line breaks
        out: list[str] = [lead] if lead else []
        append = out.append
        # accidentals written so far in this bar, per letter (0-6) and per (letter, octave)
        # number; a note needs one when either differs from its own (absent: the key's)
        written: dict[int, int] = {}
        touched = 0  # bits of the letters in ``written``
        sig = self.sig
        pitch = self.pitch
        beat = self.beat
        plain_len = self.plain_len
        chord_info = self.chord_info
        # a note tied over the bar line keeps its accidental in abc2midi and in our reader, so
        # another note on the same letter and octave at the bar's start must spell its own:
        # ``first`` holds those notes until the bar's first segment is written
        first = {pitch[x][4]: x for x in carry} if carry else None
        prev_tied = carry

        def spelled(x: int) -> str:
            """Pitch ``x`` as written here: with its accidental unless the key and the bar
            so far give it (and no note tied over the bar line on its letter and octave
            spells another)."""
            nonlocal touched
            li, acc, _, txt, lo, atxt, inkey, bit = pitch[x]
            if not inkey or touched & bit or first:
                sl = sig[li]
                if (written.get(li, sl) != acc or written.get(lo, sl) != acc
                        or (first and first.get(lo, x) != x)):
                    written[li] = written[lo] = acc
                    touched |= bit
                    return atxt
            return txt

        for tup, gsegs in groups:
            plain = tup is None
            if not plain:
                p, q = tup
                append(" (3" if (p == 3 and len(gsegs) == 3) else f" ({p}:{q}:{len(gsegs)}")
            for s, e, ps, tied in gsegs:
                if tempo_at and s in tempo_at:
                    append(f" [Q:{_tempo_text(tempo_at[s])}] ")
                elif plain and s != b0 and not (s - b0) % beat:
                    append(" ")
                ln = plain_len[e - s] if plain else self.length((e - s) * p, q)
                if not ps:
                    append(rest + ln)
                    first = None
                    prev_tied = _NO_TIES
                    continue
                if len(ps) == 1:
                    txt = spelled(ps[0])
                    first = None
                    prev_tied = tied
                    append(txt + ln + "-" if tied else txt + ln)
                    continue
                info = chord_info.get(ps)
                if info is None:
                    info = chord_info[ps] = self._chord_at_start(ps)
                mask, ctext, updates, umask = info
                if (not touched & mask and not first and not prev_tied
                        and (not tied or len(tied) == len(ps))):
                    # none of its letters written in this bar yet: as from a bar's start
                    prev_tied = tied
                    append(ctext + ln + "-" if tied else ctext + ln)
                    if updates:
                        for li, lo, acc in updates:
                            written[li] = written[lo] = acc
                        touched |= umask
                    continue
                if prev_tied:
                    # continuations first: abc2midi ties a note to the first chord note that
                    # shares its letter and octave
                    ps = tuple(sorted(ps, key=lambda x: x not in prev_tied))
                prev_tied = tied
                parts = [spelled(x) for x in ps]
                first = None
                if len(tied) == len(ps):
                    append("[" + "".join(parts) + "]" + ln + "-")
                elif not tied:
                    append("[" + "".join(parts) + "]" + ln)
                else:
                    append("[" + "".join(t + ("-" if x in tied else "") for t, x in zip(parts, ps))
                           + "]" + ln)
        return "".join(out).strip()

    def bar_groups(self, segs, b0: int, b1: int, pickup: bool, on_grid: bool = False):
        """One bar of one voice as written notes: [(None or tuplet (p, q), [(start, end,
        pitches, tied pitches)])], each length a single note value."""
        odd = self.odd
        if not on_grid and any((s - b0) % odd or (e - b0) % odd for s, e, _, _ in segs):
            groups = self.tuplets(segs, b0, b1, pickup)
        else:
            groups = ((None, segs),)
        return self.engravable(groups, b0, b1)

    def engravable(self, groups, b0: int, b1: int):
        """``groups`` with every segment a single written note value (plain, dotted or double
        dotted): longer or odd lengths become tied pieces, split where the meter's beats and
        half bars fall (tuplet notes: largest values first)."""
        out = []
        whole = 4 * self.tpq
        plain_ok = self.plain_ok
        for tup, gsegs in groups:
            p, q = tup if tup is not None else (1, 1)
            if tup is None:
                if all(map(plain_ok.__getitem__, [e - s for s, e, _, _ in gsegs])):
                    out.append((tup, gsegs))
                    continue
            elif all(_is_note_value((e - s) * p, q * whole) for s, e, _, _ in gsegs):
                out.append((tup, gsegs))
                continue
            if tup is None:
                m = self.p.meter_at(b0)
                # a pickup bar is the end of a full bar: positions count from that bar's start
                phase = max(0, m.bar_ticks - (b1 - b0)) - b0
                cut = self._metric_split(m.numerator, m.denominator)
            pieces = []
            for s, e, ps, tied in gsegs:
                if tup is None:
                    bounds = [x - phase for x in cut(s + phase, e + phase)]
                else:
                    bounds = _tuplet_split(s, e, p, q, 4 * self.tpq)
                if len(bounds) == 2:
                    pieces.append((s, e, ps, tied))
                    continue
                on = frozenset(ps)
                for a, b in zip(bounds, bounds[1:]):
                    pieces.append((a, b, ps, tied if b == e else on))
            out.append((tup, pieces))
        return out

    def _metric_split(self, num: int, den: int):
        """A function (start, end) -> [start, cut points..., end] for one bar of ``num/den``,
        positions counted from the bar's start: a length that is no single note value is cut
        at the coarsest metric point inside it (half bar, beat, then halves of a beat)."""
        key = (num, den)
        fn = self._splitters.get(key)
        if fn is not None:
            return fn
        whole = 4 * self.tpq
        bar = num * whole // den
        beat = whole // den
        steps = []
        if den >= 8 and num % 3 == 0 and num > 3:  # compound: beats of three
            steps.append(3 * beat)
        elif num % 2 == 0 and num > 2:
            steps.append(bar // 2)
        steps.append(beat)
        while steps[-1] % 2 == 0 and steps[-1] > self.odd:
            steps.append(steps[-1] // 2)

        def cut(s: int, e: int) -> list[int]:
            if _is_note_value(e - s, whole):
                return [s, e]
            for step in steps:
                m = (s // step + 1) * step
                if m < e:
                    return cut(s, m)[:-1] + cut(m, e)
            return _tuplet_split(s, e, 1, 1, whole)

        self._splitters[key] = cut
        return cut

    def _chord_at_start(self, ps: tuple) -> tuple[int, str, tuple, int]:
        """A chord as written where none of its letters has an accidental written before in
        the bar: (bits of its letters, its text, (letter, (letter, octave) number,
        accidental) of each note written with one, bits of their letters)."""
        mask, umask, parts, updates, done = 0, 0, [], [], {}
        for x in ps:
            li, acc, _, txt, lo, atxt, _, bit = self.pitch[x]
            sl = self.sig[li]
            mask |= bit
            if done.get(li, sl) != acc or done.get(lo, sl) != acc:
                txt = atxt
                done[li] = done[lo] = acc
                updates.append((li, lo, acc))
                umask |= bit
            parts.append(txt)
        return mask, "[" + "".join(parts) + "]", tuple(updates), umask

    def tuplets(self, segs, b0, b1, pickup):
        """Split a bar into plain runs and tuplet groups [(None|(p, q), segments)]."""
        # the layout depends only on the bar's shape: bars with the same rhythm share it
        shape = tuple([(s - b0, e - b0) for s, e, _, _ in segs])
        layout = _Writer._tuplet_layout(self.tpq, shape, b1 - b0, bool(pickup))
        groups = []
        for tag, pieces in layout:
            out = []
            for a, b, i, whole in pieces:
                ps = segs[i][2]
                out.append((a + b0, b + b0, ps, segs[i][3] if whole else frozenset(ps)))
            groups.append((tag, out))
        return groups

    @staticmethod
    @functools.lru_cache(maxsize=20000)
    def _tuplet_layout(tpq: int, shape, length: int, pickup: bool):
        """``tuplets`` for a bar from 0 to ``length`` whose segments span ``shape``:
        [(None|(p, q), [(start, end, segment index, True when the piece ends the segment)])]
        (the same for every bar of that shape, in any writer at ``tpq``)."""
        plan = _Writer._tuplet_plan(tpq, shape, length, pickup)
        if plan is None:  # nothing fits (raw, unquantized ticks): snap to the plain grid
            odd = _odd_part(tpq)
            snapped = []
            for i, (s, e) in enumerate(shape):
                s2 = round(s / odd) * odd
                e2 = min(length, round(e / odd) * odd)
                if e2 > s2:
                    if snapped and snapped[-1][1] > s2:
                        continue
                    snapped.append((s2, e2, i, True))
            return ((None, tuple(snapped)),)
        tchunks = [c for c in plan if c[2] is not None]
        edges = sorted({c for c0, c1, _ in tchunks for c in (c0, c1)})
        groups: list = []
        ci = 0
        for i, (s, e) in enumerate(shape):
            pts = [s, *[x for x in edges if s < x < e], e]
            for a, b in zip(pts, pts[1:]):
                while ci < len(tchunks) and tchunks[ci][1] <= a:
                    ci += 1
                chunk = tchunks[ci] if ci < len(tchunks) and tchunks[ci][0] <= a else None
                tag = (chunk[2], _pow2_below(chunk[2]), chunk[0]) if chunk else None
                if groups and groups[-1][0] == tag:
                    groups[-1][1].append((a, b, i, b == e))
                else:
                    groups.append((tag, [(a, b, i, b == e)]))
        return tuple(((g[0][0], g[0][1]) if g[0] else None, tuple(g[1])) for g in groups)

    @staticmethod
    def _tuplet_plan(tpq: int, shape, b1: int, pickup: bool):
        """[(chunk start, chunk end, tuplet p or None)] covering a bar from 0 to ``b1`` whose
        segments span ``shape`` [(start, end)], or None when no tuplet grid fits."""
        odd = _odd_part(tpq)
        starts = [s for s, _ in shape]
        ends = [e for _, e in shape]  # ascending too: segments do not overlap

        def inside(c):  # strictly inside a segment
            k = bisect_left(starts, c) - 1
            return k >= 0 and ends[k] > c

        plan = None
        for R in (tpq, 2 * tpq, tpq // 2, tpq // 4):
            if R <= 0:
                continue
            es = [0]  # chunk edges: multiples of R from the bar's start (its end for a pickup)
            t = (b1 % R) - R if pickup else R
            while t < b1:
                if t > 0:
                    es.append(t)
                t += R
            es.append(b1)
            ok, clean, spec = True, True, []
            for c0, c1 in zip(es, es[1:]):
                ss = starts[bisect_left(starts, c0):bisect_left(starts, c1)]  # in [c0, c1)
                ee = ends[bisect_right(ends, c0):bisect_right(ends, c1)]  # in (c0, c1]
                if not ((c1 - c0) % odd or any([(x - c0) % odd for x in ss])
                        or any([(x - c0) % odd for x in ee])):
                    spec.append((c0, c1, None))
                    continue
                pts = [c1 - c0, *[x - c0 for x in ss if x > c0], *[x - c0 for x in ee if x < c1]]
                for p in (3, 5, 7, 9):
                    if all([(x * p) % odd == 0 for x in pts]):
                        break
                else:
                    ok = False
                    break
                if clean and (inside(c0) or inside(c1)):
                    clean = False
                spec.append((c0, c1, p))
            if ok and clean:
                plan = spec
                break
            if ok and plan is None:
                plan = spec  # usable with ties at the chunk edges; keep looking for a clean one
        return plan

    # -- whole tune
    def plan(self):
        """The tune's time line and voices: (bars [(start, end)], tempos in order, {tick: bpm}
        of tempo changes, {tick: Meter} of meter changes, staves [(source voice, its number of
        layers, layer number, segments, pitches of its notes)])."""
        p = self.p
        bars = self.bars()
        total_end = bars[-1][1] if bars else 0
        tempos = sorted(p.tempos or [Tempo(0, 120.0)], key=lambda t: t.tick)
        tempo_at = {t.tick: t.bpm for t in tempos if 0 < t.tick < total_end}
        meter_at = {m.tick: m for m in p.meters if 0 < m.tick < total_end}
        cuts = [b for b, _ in bars] + list(tempo_at)
        staves = []
        for vi in range(len(p.voices)):
            layers = self.layers(vi, cuts, total_end)
            for k, (segs, notes) in enumerate(layers):
                staves.append((vi, len(layers), k, segs, notes))
        return bars, tempos, tempo_at, meter_at, staves

    def write(self, x: int, title: str | None) -> str:
        p = self.p
        m0 = p.meter_at(0)
        self.beat = max(1, self.tpq * 4 // m0.denominator)
        if m0.denominator >= 8 and m0.numerator % 3 == 0 and m0.numerator > 3:
            self.beat *= 3
        bars, tempos, tempo_at, meter_at, staves = self.plan()
        total_end = bars[-1][1] if bars else 0
        head = [f"X:{x}"]
        t = title if title is not None else p.title
        if t:
            head.append("T:" + " ".join(str(t).split()))
        head.append(f"M:{m0.numerator}/{m0.denominator}")
        head.append("L:" + self._unit_text())
        head.append("Q:" + _tempo_text(tempos[0].bpm if tempos[0].tick == 0 else 120.0))
        head.append("K:" + self.ktext)
        # per voice: bar texts
        odd = self.odd
        pickup = p.anacrusis > 0
        leads = []
        for b0, _ in bars:
            m = meter_at.get(b0)
            leads.append("" if m is None else f"[M:{m.numerator}/{m.denominator}] ")
        bar_text = self.bar_text
        voice_bars: list[list[str]] = []
        weights: list[list[int]] = []  # symbols per bar, per voice
        for n, (vi, _, layer, segs, _) in enumerate(staves):
            starts = [sg[0] for sg in segs]
            # segments follow one another: every end is the next start, the last total_end
            grid = total_end % odd == 0 and not any(map(odd.__rmod__, starts))  # s % odd
            tempo = tempo_at if n == 0 else {}
            texts, weight = [], []
            j = 0
            for bi, (b0, b1) in enumerate(bars):
                k = bisect_left(starts, b1, j)
                texts.append(bar_text(segs[j:k], b0, b1, bi == 0 and pickup, tempo, leads[bi],
                                      segs[j - 1][3] if j else _NO_TIES,
                                      grid and b0 % odd == 0, "x" if layer else "z"))
                weight.append(self.symbols)
                j = k
            voice_bars.append(texts)
            weights.append(weight)
        if meter_at and self.layout == "voices" and voice_bars and voice_bars[0]:
            # each voice starts in the tune's first meter, whatever the voice before ended in
            for texts in voice_bars[1:]:
                texts[0] = f"[M:{m0.numerator}/{m0.denominator}] " + texts[0]
        if any(nl > 1 for _, nl, _, _, _ in staves):  # a track's layers share a staff
            groups = []
            for n, (_, _, layer, _, _) in enumerate(staves):
                if layer % STAFF_VOICES == 0:
                    groups.append([])
                groups[-1].append(str(n + 1))
            head.insert(len(head) - 1, "%%score " + " ".join(f"({' '.join(g)})" for g in groups))
        body = []
        lines = _line_groups(weights, self.bpl)
        for n, (vi, _, k, _, _) in enumerate(staves):
            v = p.voices[vi]
            # a track name as one printable line (MIDI files carry any bytes there)
            name = " ".join("".join(c if c.isprintable() else " " for c in v.name).split())
            name = (name or program_name(v.program, v.drum)).replace('"', "'")
            label = f' name="{name}"' if k == 0 else ""
            if k == 0:
                clef = "" if v.drum else _clef([x for st in staves if st[0] == vi for x in st[4]])
            body.append(f"V:{n + 1}{label}{clef}")
            body.append("%%MIDI channel 10" if v.drum else f"%%MIDI program {int(v.program)}")
            if self.layout == "voices":
                body.extend(self._lines(voice_bars[n], lines))
        if self.layout == "interleaved" and voice_bars:
            for a, b in lines:
                end = " |]" if b == len(bars) else " |"
                for n in range(len(staves)):
                    body.append(f"[V:{n + 1}] " + " | ".join(voice_bars[n][a:b]) + end)
        return "\n".join(head + body) + "\n"

    def _unit_text(self) -> str:
        g = math.gcd(self.unit, self.tpq * 4)
        return f"{self.unit // g}/{self.tpq * 4 // g}"

    def _lines(self, texts: list[str], lines: list[tuple[int, int]]) -> list[str]:
        n = len(texts)
        return [" | ".join(texts[a:b]) + (" |]" if b >= n else " |") for a, b in lines]


def write_abc(
    piece: Piece,
    *,
    x: int = 1,
    unit: tuple[int, int] | None = None,
    layout: str = "voices",
    bars_per_line: int = 4,
    key: Key | str | None = None,
    title: str | None = None,
    notes: list[tuple[list[int], ...]] | None = None,
) -> str:
    """One ABC 2.1 tune for ``piece``. Every note's onset and duration is kept exactly.

    ``unit`` is L (default 1/16); ``key`` a Key, a K: text (``"none"`` writes explicit
    accidentals only), or None (the piece's key, estimated when unknown); ``layout`` is
    ``voices`` (voice after voice) or ``interleaved`` (``[V:n]`` lines per group of bars).
    ``notes``, when given, stands for the voices' notes: per voice, its notes' (starts,
    pitches, durations, ...) as lists, as ``midi.read_midi_columns`` gives them."""
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if bars_per_line < 1:
        raise UserError(f"bars per line must be at least 1, got {bars_per_line}")
    unit = tuple(unit) if unit is not None else DEFAULT_UNIT
    if len(unit) != 2 or unit[0] <= 0 or unit[1] <= 0:
        raise UserError(f"unit must be a positive fraction like 1/16, got {unit!r}")
    if notes is not None and len(notes) != len(piece.voices):
        raise ValueError(f"notes: {len(notes)} voices' columns for {len(piece.voices)} voices")
    writer = _Writer(piece, _voice_notes(piece, notes), unit, key, layout, bars_per_line)
    # The writer makes hundreds of thousands of small tuples and lists for a long piece, none
    # in a reference cycle: with the cycle collector paused, `midi2abc` on
    # examples/bench/midi2abc.py's folder converts about 8% more notes per CPU second.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return writer.write(x, title)
    finally:
        if was_enabled:
            gc.enable()


def _voice_notes(piece: Piece, columns=None) -> list[list[tuple[int, int, int]]]:
    """The one form the writer reads notes in: per voice, sorted (start, pitch, duration),
    without the notes it cannot place (no duration, pitch out of range, before the start).
    From ``columns`` (per voice: starts, pitches, durations, ...) when given, else from the
    voices' notes."""
    out = []
    for i, v in enumerate(piece.voices):
        if columns is None:
            notes = [(n.start, n.pitch, n.duration) for n in v.notes]
        else:
            notes = list(zip(*columns[i][:3]))
        notes = [n for n in notes if n[2] > 0 and 0 <= n[1] <= 127 and n[0] >= 0]
        notes.sort()
        out.append(notes)
    return out


def parse_unit(text: str) -> tuple[int, int]:
    """``1/16`` -> (1, 16); UserError when malformed."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise UserError(f"unit must look like 1/16, got {text!r}")
    return int(m.group(1)), int(m.group(2))
