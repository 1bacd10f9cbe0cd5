"""ABC notation <-> Piece: an exact ABC 2.1 writer and a tolerant reader.

The writer keeps every note's onset and duration exact: notes are split at bar lines (and at
tempo/meter changes) with ties; overlapping notes of different lengths in one voice become
chords of equal length joined by ties; off-grid durations are written as tuplets. The reader
accepts ABC as people and language models write it and never raises on a malformed body: it
returns what it could read plus a list of warnings.
"""

from __future__ import annotations

import functools
import gc
import math
import re
from bisect import bisect_left, bisect_right
from fractions import Fraction
from operator import add, attrgetter

from abcscribe.core.errors import UserError
from abcscribe.core.gm import program_name, program_number
from abcscribe.core.notes import TPQ, Key, Meter, Note, Piece, Tempo, Voice

DEFAULT_UNIT = (1, 16)
LAYOUTS = ("voices", "interleaved")

# ---- pitch and key tables ------------------------------------------------------------------
_LETTERS = "CDEFGAB"
_LETTER_PC = (0, 2, 4, 5, 7, 9, 11)
_LETTER_INDEX = {c: i for i, c in enumerate(_LETTERS)}
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SHARP_ORDER = (3, 0, 4, 1, 5, 2, 6)  # F C G D A E B as letter indices
_FLAT_ORDER = (6, 2, 5, 1, 4, 0, 3)  # B E A D G C F
_ACC_TEXT = {-2: "__", -1: "_", 0: "=", 1: "^", 2: "^^"}
_ACC_VALUE = {"__": -2, "_": -1, "=": 0, "^": 1, "^^": 2}

# mode -> fifths relative to the major key on the same tonic
MODE_OFFSET = {
    "major": 0, "ionian": 0, "mixolydian": -1, "dorian": -2, "minor": -3, "aeolian": -3,
    "phrygian": -4, "locrian": -5, "lydian": 1,
}
_MODE_ABBREV = {
    "maj": "major", "ion": "ionian", "mix": "mixolydian", "dor": "dorian", "min": "minor",
    "m": "minor", "aeo": "aeolian", "phr": "phrygian", "loc": "locrian", "lyd": "lydian",
}
_MODE_WRITE = {
    "major": "", "ionian": "", "minor": "m", "aeolian": "m", "dorian": "dor",
    "phrygian": "phr", "lydian": "lyd", "mixolydian": "mix", "locrian": "loc",
}


def _fifths_name(f: int) -> str:
    """Name of the major tonic ``f`` fifths from C (F# for 6, Bb for -2, ...)."""
    letter = "FCGDAEB"[(f + 1) % 7]
    acc = (f + 1) // 7
    return letter + ("#" * acc if acc > 0 else "b" * -acc)


def signature(fifths: int) -> list[int]:
    """Accidental (-2..2) of each letter C..B under a key signature of ``fifths``."""
    sig = [0] * 7
    if fifths > 0:
        for i in range(fifths):
            sig[_SHARP_ORDER[i % 7]] += 1
    elif fifths < 0:
        for i in range(-fifths):
            sig[_FLAT_ORDER[i % 7]] -= 1
    return sig


def key_from_tonic(tonic: str, mode: str = "major") -> Key:
    """Key for a tonic name (``F#``, ``Bb``) and a mode name."""
    letter = tonic[:1].upper()
    acc = tonic[1:].count("#") - tonic[1:].count("b")
    fifths = _LETTER_FIFTHS.get(letter, 0) + 7 * acc + MODE_OFFSET.get(mode, 0)
    return Key(fifths, mode, letter + tonic[1:])


def key_text(key: Key | None) -> str:
    """The ``K:`` value for a key (``G``, ``Am``, ``Ddor``; ``none`` for None)."""
    if key is None:
        return "none"
    mode = key.mode if key.mode in MODE_OFFSET else "major"
    tonic = _fifths_name(key.fifths - MODE_OFFSET[mode])
    return tonic + _MODE_WRITE[mode]


# Krumhansl-Kessler key profiles (major, minor), tonic first.
_KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
_KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def estimate_key(piece: Piece) -> Key:
    """Most likely major/minor key: Krumhansl-Schmuckler correlation of the duration-weighted
    pitch-class histogram (drums excluded). C major when there are no pitched notes."""
    hist = [0.0] * 12
    for v in piece.voices:
        if v.drum:
            continue
        for n in v.notes:
            hist[n.pitch % 12] += n.duration
    return _key_from_histogram(hist)


def _key_from_histogram(hist: list[float]) -> Key:
    """``estimate_key`` from the duration-weighted pitch-class histogram."""
    if not any(hist):
        return Key(0, "major", "C")

    def corr(prof, shift):
        xs = [hist[(shift + i) % 12] for i in range(12)]
        mx, my = sum(xs) / 12, sum(prof) / 12
        num = sum((x - mx) * (y - my) for x, y in zip(xs, prof))
        den = math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in prof))
        return num / den if den else 0.0

    best = None
    for pc in range(12):
        for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
            c = corr(prof, pc)
            if best is None or c > best[0] + 1e-12:
                best = (c, pc, mode)
    _, pc, mode = best
    # spell the tonic with the signature nearest to C
    off = MODE_OFFSET[mode]
    cands = [f for f in range(-7, 8) if (7 * (f - off)) % 12 == pc]
    f = min(cands, key=abs)
    return Key(f, mode, _fifths_name(f - off))


def parse_key(text: str) -> tuple[Key | None, list[int], bool]:
    """Parse a ``K:`` value. Returns (key or None for ``none``, accidental per letter C..B,
    recognised). Clefs and other keywords after the key are ignored."""
    s = text.strip()
    s = s.split("%", 1)[0].strip()
    low = s.lower()
    if low in ("", "none") or low.startswith("none "):
        return None, [0] * 7, bool(low)
    if low.startswith("hp"):  # Highland pipes: F# C#, G natural
        sig = [0] * 7
        sig[3] = sig[0] = 1
        return Key(2, "mixolydian", "A"), sig, True
    m = re.match(r"([A-Ga-g])([#b]?)\s*([A-Za-z]*)", s)
    if not m:
        # a clef or an instruction only ("K:bass", "K:clef=treble"): C major
        return Key(0, "major", "C"), [0] * 7, False
    tonic = m.group(1).upper() + m.group(2)
    mword = m.group(3).lower()
    mode = "major"
    rest = s[m.end():]
    if mword:
        ab = mword[:3]
        if mword == "m" or (mword.startswith("m") and ab not in ("maj", "mix") and len(mword) <= 3
                            and mword in ("m", "mi", "min")):
            mode = "minor"
        elif ab in _MODE_ABBREV:
            mode = _MODE_ABBREV[ab]
        else:
            rest = mword + rest  # not a mode: maybe "exp" or a clef word
    key = key_from_tonic(tonic, mode)
    sig = signature(key.fifths)
    toks = rest.split()
    if toks and toks[0].lower() == "exp":
        sig = [0] * 7
    for tok in toks:
        am = re.fullmatch(r"(\^\^|\^|__|_|=)([A-Ga-g])", tok)
        if am:
            sig[_LETTER_INDEX[am.group(2).upper()]] = _ACC_VALUE[am.group(1)]
    return key, sig, True


def _spelling(sig: list[int], fifths: int) -> list[tuple[int, int]]:
    """(letter index, accidental) for each pitch class under a key signature."""
    spell: list[tuple[int, int] | None] = [None] * 12
    for i in range(7):
        spell[(_LETTER_PC[i] + sig[i]) % 12] = (i, sig[i])
    for pc in range(12):
        if spell[pc] is not None:
            continue
        if pc in _LETTER_PC:
            spell[pc] = (_LETTER_PC.index(pc), 0)
        elif fifths >= 0:
            spell[pc] = (_LETTER_PC.index((pc - 1) % 12), 1)
        else:
            spell[pc] = (_LETTER_PC.index((pc + 1) % 12), -1)
    return spell  # type: ignore[return-value]


def _note_text(letter: int, octave: int) -> str:
    """ABC letter with octave marks; octave 4 is the one starting at middle C."""
    c = _LETTERS[letter]
    if octave >= 5:
        return c.lower() + "'" * (octave - 5)
    return c + "," * (4 - octave)


# ---- writer --------------------------------------------------------------------------------
_NO_TIES: frozenset = frozenset()
_PITCH_TABLES: dict[tuple, list] = {}
_TUPLET_LAYOUTS: dict[tuple, tuple] = {}  # _Writer.tuplets() per bar shape, shared by writers


def _pitch_table(sig: list[int], fifths: int) -> list[tuple]:
    """Per MIDI pitch under a key signature: (letter, accidental, octave, text without
    accidental, number of (letter, octave) (>= 7, so apart from letter numbers), text with
    accidental, True when the key's own accidental, bit of the letter) (cached; the list is
    shared, never changed)."""
    k = (tuple(sig), fifths)
    table = _PITCH_TABLES.get(k)
    if table is None:
        spell = _spelling(sig, fifths)
        table = []
        for p in range(128):
            li, acc = spell[p % 12]
            octave = (p - acc) // 12 - 1
            txt = _note_text(li, octave)
            table.append((li, acc, octave, txt, 7 * octave + li + 21, _ACC_TEXT[acc] + txt,
                          acc == sig[li], 1 << li))
        if len(_PITCH_TABLES) > 256:
            _PITCH_TABLES.clear()
        _PITCH_TABLES[k] = table
    return table


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


def _clef(notes) -> str:
    """`` clef=bass`` for a voice that sits mostly below middle C, else nothing (treble)."""
    pitches = sorted(pch for _, pch, _ in notes)
    if pitches and pitches[len(pitches) // 2] < 57:
        return " clef=bass"
    return ""


_INLINE_FIELD = re.compile(r"\[[A-Za-z]:[^\]]*\]")
_SYMBOL = re.compile(r"\[[^\]]*\]|[A-Ga-gz]")  # a chord, a note or a rest
_LINE_SYMBOLS = 25  # notes, rests and chords that fit on one engraved line of abcm2ps


def _line_groups(voice_bars: list[list[str]], most: int) -> list[tuple[int, int]]:
    """Bars [a, b) of each line of music: at most ``most`` bars, fewer where the busiest voice
    would crowd the line (the same lines for every voice, so systems line up)."""
    nb = len(voice_bars[0]) if voice_bars else 0
    weight = [0] * nb
    for texts in voice_bars:
        for i, t in enumerate(texts):
            weight[i] = max(weight[i], len(_SYMBOL.findall(_INLINE_FIELD.sub("", t))))
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


_NP_NOTES = 256  # voices given as columns with this many notes take _chord_segments_np
_SINGLE = tuple((p,) for p in range(128))


def _chord_segments_np(columns, cuts, total_end):
    """``_Writer._chord_segments`` with numpy, straight from a voice's (starts, pitches,
    durations, ...) columns: the same segments, or None when the notes overlap (or are not
    sorted and valid, for the general path to deal with)."""
    import numpy as np

    st, pi, en, c = (np.array(x) for x in (columns[0], columns[1], columns[2], cuts))
    if not len(c):
        c = c.astype(np.int64)
    if any(a.dtype.kind != "i" for a in (st, pi, en, c)) or not len(st):
        return None  # ticks that are not whole numbers, or no notes
    if en.min() <= 0 or pi.min() < 0 or pi.max() > 127 or st.min() < 0:
        return None
    en += st
    new = np.empty(len(st), bool)  # first note of a chord (a run of notes starting together)
    new[0] = True
    np.not_equal(st[1:], st[:-1], out=new[1:])
    if (st[1:] < st[:-1]).any():
        return None
    same = ~new[1:]
    if same.any():
        dp = pi[1:][same] - pi[:-1][same]
        if (dp < 0).any():  # not sorted by pitch within a chord
            return None
        if (en[1:][same] != en[:-1][same]).any():  # a chord whose notes end apart
            return None
        dup = np.zeros(len(st), bool)
        dup[1:][same] = dp == 0
        if dup.any():  # the same pitch twice in a chord sounds once
            keep = ~dup
            st, pi, en, new = st[keep], pi[keep], en[keep], new[keep]
    first = np.flatnonzero(new)
    gs, ge = st[first], en[first]
    if (gs[1:] < ge[:-1]).any():  # a chord starts before the previous one ends
        return None
    # pitches of each chord; index 0 stands for a rest
    ps = [()]
    ps.extend(map(_SINGLE.__getitem__, pi[first].tolist()))
    size = np.diff(first, append=len(pi))
    multi = np.flatnonzero(size > 1)
    if len(multi):
        pl = pi.tolist()
        for g, a, k in zip(multi.tolist(), first[multi].tolist(), size[multi].tolist()):
            ps[g + 1] = tuple(pl[a:a + k])
    c = c[(c > 0) & (c < total_end)]
    bounds = np.concatenate(([0, total_end], gs, ge, c))
    bounds.sort()
    bounds = bounds[np.concatenate(([True], bounds[1:] != bounds[:-1]))]
    lo, hi = bounds[:-1], bounds[1:]
    g = np.searchsorted(gs, lo, "right") - 1
    gend = ge[np.maximum(g, 0)]
    sounding = (g >= 0) & (lo < gend)
    idx = np.where(sounding, g + 1, 0)
    tidx = np.where(sounding & (hi < gend), idx, 0)  # cut before the chord ends: tied on
    ts = [_NO_TIES] * len(ps)
    for k in set(tidx[tidx > 0].tolist()):
        ts[k] = frozenset(ps[k])
    return list(zip(lo.tolist(), hi.tolist(), map(ps.__getitem__, idx.tolist()),
                    map(ts.__getitem__, tidx.tolist())))


class _Writer:
    def __init__(self, piece: Piece, unit, key, layout, bars_per_line, columns=None):
        self.p = piece
        self.columns = columns  # per voice (starts, pitches, durations, ...), or None
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
        self.pitch = _pitch_table(self.sig, fifths)
        self.plain_len = _Lengths(self.unit)  # length() of whole ticks, keyed by ticks
        self.chord_info: dict[tuple, tuple] = {}  # _chord_at_start() per chord
        self.len_cache: dict[tuple[int, int], str] = {}
        self._splitters: dict[tuple[int, int], object] = {}  # _metric_split per meter

    def _estimate_key(self) -> Key:
        if self.columns is None:
            return estimate_key(self.p)
        hist = [0.0] * 12
        for v, (_, pitches, durations, *_) in zip(self.p.voices, self.columns):
            if not v.drum:
                for p, d in zip(pitches, durations):
                    hist[p % 12] += d
        return _key_from_histogram(hist)

    def notes(self, vi: int) -> list[tuple[int, int, int]]:
        """Voice ``vi``'s notes as sorted (start, pitch, duration), without the ones the
        writer cannot place (no duration, pitch out of range, before the start)."""
        if self.columns is None:
            notes = [(n.start, n.pitch, n.duration) for n in self.p.voices[vi].notes
                     if n.duration > 0 and 0 <= n.pitch <= 127 and n.start >= 0]
            notes.sort()
            return notes
        starts, pitches, durations = self.columns[vi][:3]
        notes = sorted(zip(starts, pitches, durations))
        if notes and (notes[0][0] < 0 or min(durations) <= 0 or min(pitches) < 0
                      or max(pitches) > 127):
            notes = [n for n in notes if n[2] > 0 and 0 <= n[1] <= 127 and n[0] >= 0]
        return notes

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
        # p.end_tick, without a generator and a property call per note
        if self.columns is None:
            end = max([max([n.start + n.duration for n in v.notes]) for v in p.voices
                       if v.notes], default=0)
        else:
            end = max([max(map(add, c[0], c[2])) for c in self.columns if c[0]],
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
        (rests as ()) with its notes [(start, pitch, duration)]: one layer when its notes form
        chords (same start, same end) that follow one another, else as many layers as the
        overlaps need (a new onset of a sounding pitch ends the earlier note)."""
        if self.columns is not None and len(self.columns[vi][0]) >= _NP_NOTES:
            segs = _chord_segments_np(self.columns[vi], cuts, total_end)
            if segs is not None:
                c = self.columns[vi]
                return [(segs, list(zip(c[0], c[1], c[2])))]
        notes = self.notes(vi)
        segs = self._chord_segments(notes, cuts, total_end)
        if segs is not None:
            return [(segs, notes)]
        return [(self._chord_segments(layer, cuts, total_end), layer)
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
                    x = ps[0]
                    li, acc, _, txt, lo, atxt, inkey, bit = pitch[x]
                    # in the key and nothing written on its letter yet: plain
                    if not inkey or touched & bit or first:
                        sl = sig[li]
                        if (written.get(li, sl) != acc or written.get(lo, sl) != acc
                                or (first and first.get(lo, x) != x)):
                            txt = atxt
                            written[li] = written[lo] = acc
                            touched |= bit
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
                parts = []
                for x in ps:
                    li, acc, _, txt, lo, atxt, inkey, bit = pitch[x]
                    if touched & bit or first:
                        sl = sig[li]
                        if (written.get(li, sl) != acc or written.get(lo, sl) != acc
                                or (first and first.get(lo, x) != x)):
                            txt = atxt
                            written[li] = written[lo] = acc
                            touched |= bit
                    elif not inkey:  # nothing written on its letter: the key's accidental
                        txt = atxt
                        written[li] = written[lo] = acc
                        touched |= bit
                    parts.append(txt)
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
        for tup, gsegs in groups:
            p, q = tup if tup is not None else (1, 1)
            if all(_is_note_value((e - s) * p, q * 4 * self.tpq) for s, e, _, _ in gsegs):
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
        key = (self.tpq, b1 - b0, bool(pickup), shape)
        layout = _TUPLET_LAYOUTS.get(key)
        if layout is None:
            layout = self._tuplet_layout(shape, b1 - b0, pickup)
            if len(_TUPLET_LAYOUTS) >= 20000:
                _TUPLET_LAYOUTS.clear()
            _TUPLET_LAYOUTS[key] = layout
        groups = []
        for tag, pieces in layout:
            out = []
            for a, b, i, whole in pieces:
                ps = segs[i][2]
                out.append((a + b0, b + b0, ps, segs[i][3] if whole else frozenset(ps)))
            groups.append((tag, out))
        return groups

    def _tuplet_layout(self, shape, length, pickup):
        """``tuplets`` for a bar from 0 to ``length`` whose segments span ``shape``:
        [(None|(p, q), [(start, end, segment index, True when the piece ends the segment)])]."""
        plan = self._tuplet_plan(shape, length, pickup)
        if plan is None:  # nothing fits (raw, unquantized ticks): snap to the plain grid
            odd = self.odd
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

    def _tuplet_plan(self, shape, b1, pickup):
        """[(chunk start, chunk end, tuplet p or None)] covering a bar from 0 to ``b1`` whose
        segments span ``shape`` [(start, end)], or None when no tuplet grid fits."""
        odd, tpq = self.odd, self.tpq
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
        layers, layer number, segments, notes)])."""
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
        for n, (vi, _, layer, segs, _) in enumerate(staves):
            starts = [sg[0] for sg in segs]
            # segments follow one another: every end is the next start, the last total_end
            grid = total_end % odd == 0 and not any(map(odd.__rmod__, starts))  # s % odd
            tempo = tempo_at if n == 0 else {}
            texts = []
            j = 0
            for bi, (b0, b1) in enumerate(bars):
                k = bisect_left(starts, b1, j)
                texts.append(bar_text(segs[j:k], b0, b1, bi == 0 and pickup, tempo, leads[bi],
                                      segs[j - 1][3] if j else _NO_TIES,
                                      grid and b0 % odd == 0, "x" if layer else "z"))
                j = k
            voice_bars.append(texts)
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
        lines = _line_groups(voice_bars, self.bpl)
        for n, (vi, _, k, _, notes) in enumerate(staves):
            v = p.voices[vi]
            name = (v.name or program_name(v.program, v.drum)).replace('"', "'")
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
    writer = _Writer(piece, unit, key, layout, bars_per_line, notes)
    # The writer makes hundreds of thousands of small tuples and lists for a long piece, none
    # in a reference cycle: with the cycle collector paused it runs a third faster in a
    # process that holds many objects (a CLI run's imports).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return writer.write(x, title)
    finally:
        if was_enabled:
            gc.enable()


def parse_unit(text: str) -> tuple[int, int]:
    """``1/16`` -> (1, 16); UserError when malformed."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise UserError(f"unit must look like 1/16, got {text!r}")
    return int(m.group(1)), int(m.group(2))


# ---- reader --------------------------------------------------------------------------------
from dataclasses import fields as _dataclass_fields  # noqa: E402
from itertools import chain  # noqa: E402

_TOKEN = re.compile(
    r"""
    ((?:\^\^|\^|__|_|=)?[A-Ga-g][,']*)(\d*/*\d*)\ *            # 1-2 note, length
  | (\((?!\d)|[\s).~HLMOPSTuvy`$*#;?@'\\]+)                   # 3 skipped: slurs, spaces
  | (\[[A-Za-z]:[^\]\n]*\])                                   # 4 inline field
  | (\[\d+(?:[,-]\d+)*)                                       # 5 ending "[1" "[1,3"
  | ((?::+\|*[\]\[]?:*|\[?\|+\]?:*)(?:\d+(?:[,-]\d+)*)?)\ *  # 6 bar line, maybe ending
  | \[((?:(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*)+)\](\d*/*\d*)\ * # 7-8 plain chord, length
  | (\[)                                                      # 9 chord open
  | (\])(\d*/*\d*)\ *                                        # 10-11 chord close, length
  | (-)\ *                                                    # 12 tie
  | ([zx])(\d*/*\d*)\ *                                      # 13-14 rest, length
  | ([ZX])(\d*)                                               # 15-16 multi-bar rest
  | \((\d+)(?::(\d*))?(?::(\d*))?                             # 17-19 tuplet
  | ([<>]+)                                                   # 20 broken rhythm
  | ("[^"\n]*"?|![^!\n]*!|\+[^+\s]*\+|\{[^}]*\}?)             # 21 skipped groups
  | (&)                                                       # 22 voice overlay
  | (.)                                                       # 23 unknown
    """,
    re.X,
)
# Alternatives that start with the same character keep their order (inline field, ending, bar,
# plain chord, chord open), the others are ordered by frequency. Every group of an alternative
# that can match empty text is its last one, so a match's ``lastindex`` names the alternative:
# 2 note, 8 plain chord (notes without lengths or ties inside), 11 chord close, 14 rest, 16
# multi-bar rest, 17-19 tuplet, the group number itself for the others. Spaces after a note,
# bar, chord, tie or rest are taken with it (spaces are skipped anyway).
_CHORD_NOTE = re.compile(r"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*")
_LENGTH = re.compile(r"(\d*)(/*)(\d*)")
_FIELD_LINE = re.compile(r"^([A-Za-z+]):(.*)$")
_MODERN = (2, 0)
_NOTE_ORDER = attrgetter("start", "pitch", "duration")


def _len_frac(num: str, slashes: str, den: str) -> tuple[int, int]:
    n = int(num) if num else 1
    if not slashes:
        return n, 1
    if den:
        return n, int(den) * (2 ** (len(slashes) - 1))
    return n, 2 ** len(slashes)


_LEN_CACHE: dict[str, tuple[int, int]] = {}
_PITCH_CACHE: dict[str, tuple] = {}


def _length_of(text: str) -> tuple[int, int]:
    """(num, den) of a note-length text such as ``3/2`` or ``//`` (cached)."""
    r = _LEN_CACHE.get(text)
    if r is None:
        r = _len_frac(*_LENGTH.fullmatch(text).groups())
        if len(_LEN_CACHE) > 4096:
            _LEN_CACHE.clear()
        _LEN_CACHE[text] = r
    return r


_CHORD_CACHE: dict[str, tuple] = {}


def _chord_info(text: str) -> tuple:
    """(_pitch_info of each note, the notes' texts) of a plain chord's inside (cached)."""
    notes = tuple(_CHORD_NOTE.findall(text))
    r = (tuple(_pitch_info(x) for x in notes), notes)
    if len(_CHORD_CACHE) > 4096:
        _CHORD_CACHE.clear()
    _CHORD_CACHE[text] = r
    return r


def _pitch_info(text: str) -> tuple:
    """(written accidental or None, letter index, (letter, octave), pitch without accidental)
    of a note's pitch text such as ``^f'`` (cached)."""
    r = _PITCH_CACHE.get(text)
    if r is None:
        acc = None
        j = 0
        if text[0] in "^_=":
            j = 2 if text[:2] in ("^^", "__") else 1
            acc = _ACC_VALUE[text[:j]]
        c = text[j]
        octave = 5 if c.islower() else 4
        li = _LETTER_INDEX[c.upper()]
        for ch in text[j + 1:]:
            octave += 1 if ch == "'" else -1
        r = (acc, li, (li, octave), 12 * (octave + 1) + _LETTER_PC[li])
        if len(_PITCH_CACHE) > 4096:
            _PITCH_CACHE.clear()
        _PITCH_CACHE[text] = r
    return r


# The same tokens as _TOKEN as plain strings (findall on a pattern without groups is the
# cheapest way to cut a line; _token_info classifies each distinct token text once with
# _TOKEN). The alternatives are _TOKEN's in the same order, with nested alternatives and
# leading optional parts spelled out (``(A|B)C`` as ``AC|BC``, ``X?Y`` as ``XY|Y``), so that
# every one starts with a literal or a character set, which the regex engine tests before
# entering it; quantifiers with nothing after them that could fail are possessive. Keep the two
# in step: tests/test_abc_reader.py checks they cut text alike.
_TOKENS = re.compile(
    r"""
    [A-Ga-g][,']*+\d*+/*+\d*+\ *+                          # note
  | \^\^?[A-Ga-g][,']*+\d*+/*+\d*+\ *+
  | __?[A-Ga-g][,']*+\d*+/*+\d*+\ *+
  | =[A-Ga-g][,']*+\d*+/*+\d*+\ *+
  | \((?!\d)                                                # skipped: slurs, spaces
  | [\s).~HLMOPSTuvy`$*#;?@'\\]++
  | \[[A-Za-z]:[^\]\n]*\]                                   # inline field
  | \[\d+(?:[,-]\d+)*                                       # ending
  | ::*\|*[\]\[]?:*(?:\d+(?:[,-]\d+)*)?\ *                  # bar line, maybe ending
  | \[\|\|*\]?:*(?:\d+(?:[,-]\d+)*)?\ *
  | \|\|*\]?:*(?:\d+(?:[,-]\d+)*)?\ *
  | \[(?:(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*)+\]\d*/*\d*\ *   # plain chord
  | \[                                                      # chord open
  | \]\d*/*\d*\ *                                           # chord close
  | -\ *                                                    # tie
  | [zx]\d*/*\d*\ *                                         # rest
  | [ZX]\d*                                                 # multi-bar rest
  | \(\d+(?::\d*)?(?::\d*)?                                 # tuplet
  | [<>]+                                                   # broken rhythm
  | "[^"\n]*"?                                              # skipped groups
  | ![^!\n]*!
  | \+[^+\s]*\+
  | \{[^}]*\}?
  | &                                                       # voice overlay
  | .                                                       # unknown
    """,
    re.X,
)
_UNIT_TOKENS: dict[int, dict[str, tuple]] = {}
# a written pitch whose accidental, from the note, the bar or the key (-2..2), keeps it in
# 0..127: the reader's fast path (music()) needs no range check for it
_SAFE_LOW, _SAFE_HIGH = 2, 125


def _unit_tokens(unit: int) -> dict[str, tuple]:
    """The cache of _token_info for one unit length (ticks of L)."""
    c = _UNIT_TOKENS.get(unit)
    if c is None:
        if len(_UNIT_TOKENS) > 64:
            _UNIT_TOKENS.clear()
        c = _UNIT_TOKENS[unit] = {}
    return c


def _plain_duration(unit: int, n: int, d: int) -> int:
    """Ticks of a length n/d of the unit outside tuplets and broken rhythms."""
    x = unit * n
    if x <= 0:
        return 0
    if d == 1:
        return x
    return x // d if x % d == 0 else max(1, round(x / d))


def _token_info(tok: str, unit: int, cache: dict[str, tuple]) -> tuple:
    """What the reader needs of one token (a match of _TOKENS), as a tuple whose first item
    is the kind (the number of _TOKEN's group that names the alternative):
    (2, accidental, letter index, (letter, octave), pitch, ticks, (num, den, pitch text)) note,
    (3,) skipped, (4, text) inline field, (5, numbers) ending,
    (6, bar sign, ending numbers or None, repeat sign or ending, text) bar line,
    (8, _pitch_info of each note, their texts, ticks, length text, (letter, octave) of each)
    plain chord, (9,) chord open,
    (11, length text) chord close, (12,) tie, (14, ticks, length text) rest,
    (16, bars text) multi-bar rest, (17, p, q, r texts) tuplet, (20, text) broken rhythm,
    (22,) voice overlay, (23, character) unknown. Ticks are for ``unit`` outside tuplets and
    broken rhythms. A note, plain chord, rest or bar line whose reading raises an exception
    (a garbage length or ending number) is kind + 100: the general code reads it again and
    raises at the point where it always did; so is a note or chord of no length or with a
    pitch (before its accidental) outside _SAFE_LOW.._SAFE_HIGH. Cached in ``cache`` (the
    unit's)."""
    m = _TOKEN.match(tok)
    k = m.lastindex
    if k == 2:
        n, d = _length_of(m[2])  # raises before any state changes, as it always did
        try:
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur = 0
        acc, li, lo, base = _pitch_info(m[1])
        # zero length or an error (the general code warns or raises), or a pitch that with an
        # accidental (-2..2) could leave 0..127 (the general code checks): the general way
        if dur <= 0 or not _SAFE_LOW <= base <= _SAFE_HIGH:
            k = 102
        info = (k, acc, li, lo, base, dur, (n, d, m[1]))
    elif k == 3 or k == 21:
        info = (3,)
    elif k == 4:
        info = (4, m[4])
    elif k == 5:
        info = (5, m[5][1:])
    elif k == 6:
        try:
            text, ending = _BAR_CACHE.get(m[6]) or _bar_parts(m[6])
            info = (6, text, ending, ":" in text or text == "[" or ending is not None, m[6])
        except Exception:
            info = (106, None, None, None, m[6])
    elif k == 8:
        pitches, texts = _CHORD_CACHE.get(m[7]) or _chord_info(m[7])
        try:
            n, d = _length_of(m[8])
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur, k = 0, 108
        if not all(_SAFE_LOW <= x[3] <= _SAFE_HIGH for x in pitches):
            k = 108
        info = (k, pitches, texts, dur, m[8], tuple(x[2] for x in pitches))
    elif k == 14:
        n, d = _length_of(m[14])  # raises before any state changes, as it always did
        try:
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur, k = 0, 114
        info = (k, dur, m[14])
    elif k == 17 or k == 18 or k == 19:
        info = (17, m[17], m[18], m[19])
    elif k in (9, 12, 22):
        info = (k,)
    else:  # 11, 16, 20, 23
        info = (k, m[k])
    if len(cache) > 4096:
        cache.clear()
    cache[tok] = info
    return info


def _cached(fn):
    """fn memoised on its one text argument (a pure parser of a field's value; results that
    raise are not stored, so they raise again)."""
    memo: dict = {}

    def wrapper(text):
        try:
            return memo[text]
        except KeyError:
            pass
        r = fn(text)
        if len(memo) > 1024:
            memo.clear()
        memo[text] = r
        return r

    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


@_cached
def _parse_key_value(text: str) -> tuple:
    """parse_key with the signature as a tuple (copy it to a list before changing it)."""
    key, sig, ok = parse_key(text)
    return key, tuple(sig), ok


@_cached
def _parse_meter(text: str) -> tuple[int, int] | None:
    s = text.strip().split("%", 1)[0].strip()
    if s in ("C", "c"):
        return 4, 4
    if s in ("C|", "c|"):
        return 2, 2
    m = re.match(r"\(?([\d+ ]+)\)?\s*/\s*(\d+)", s)
    if not m:
        return None
    try:
        num = sum(int(x) for x in re.split(r"[+ ]+", m.group(1).strip()) if x)
        den = int(m.group(2))
    except ValueError:
        return None
    if num <= 0 or den <= 0 or num > 64 or den > 64:
        return None
    return num, den


@_cached
def _parse_unit_field(text: str) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\s*/\s*(\d+)", text)
    if not m:
        m1 = re.match(r"\s*1\s*$", text)
        return (1, 1) if m1 else None
    a, b = int(m.group(1)), int(m.group(2))
    if a <= 0 or b <= 0 or b > 512:
        return None
    return a, b


@_cached
def _parse_tempo(text: str) -> float | None:
    """Quarter notes per minute from a ``Q:`` value (``1/4=120``, ``3/8=60``, ``120``)."""
    s = re.sub(r'"[^"]*"', " ", text).strip()
    m = re.search(r"((?:\d+/\d+\s*)+)=\s*(\d+(?:\.\d+)?)", s)
    if m:
        beats = sum(int(a) / int(b) for a, b in re.findall(r"(\d+)/(\d+)", m.group(1)) if int(b))
        bpm = float(m.group(2)) * beats * 4
    else:
        m = re.match(r"(?:[Cc]\s*=\s*)?(\d+(?:\.\d+)?)", s)
        if not m:
            return None
        bpm = float(m.group(1))
    return bpm if 1 <= bpm <= 2000 else None


@_cached
def _parse_voice_field(text: str) -> tuple | None:
    """A V: value as (id, name or None, GM program of the name or None, whether the name is a
    drum kit's), None when empty."""
    toks = text.strip().split(None, 1)
    if not toks:
        return None
    rest = toks[1] if len(toks) > 1 else ""
    m = re.search(r'(?:name|nm)\s*=\s*"([^"]*)"', rest) or re.search(
        r"(?:name|nm)\s*=\s*(\S+)", rest)
    if not m:
        return toks[0], None, None, False
    name = m.group(1).strip()
    return (toks[0], name, program_number(name),
            name.lower() in ("drum kit", "drums", "drum set", "percussion"))


@_cached
def _parse_directive(line: str) -> tuple:
    """A %% line as ("program", 0..127), ("drum", bool), ("propagate", mode) or (None, None)."""
    words = line[2:].split()
    if not words:
        return None, None
    head = words[0].lower()
    if head == "midi" and len(words) >= 3:
        what = words[1].lower()
        nums = [int(w) for w in words[2:4] if w.isdigit()]
        if what == "program" and nums:
            prog = nums[-1] if len(nums) == 2 else nums[0]
            if 0 <= prog <= 127:
                return "program", prog
        elif what == "channel" and nums:
            return "drum", nums[0] == 10
    elif head == "propagate-accidentals" and len(words) >= 2:
        if words[1] in ("not", "octave", "pitch"):
            return "propagate", words[1]
    return None, None


_NO_LAST = (None, None, None, None)


def _bare_notes_ok() -> bool:
    """Whether a Note made with object.__new__ and its four fields set is Note(p, s, d): the
    reader makes its notes so (a dataclass __init__ is a Python call, a large share of the time
    per note), unless Note someday gets other fields, defaults or checks."""
    try:
        n = object.__new__(Note)
        n.pitch, n.start, n.duration, n.velocity = 60, 1, 2, 80
        return (n == Note(60, 1, 2) and "__post_init__" not in vars(Note)
                and [f.name for f in _dataclass_fields(Note)] == [
                    "pitch", "start", "duration", "velocity"])
    except Exception:
        return False


_BARE_NOTES = _bare_notes_ok()


def _hot_state(vs: "_VoiceState", prop_pitch: bool) -> tuple:
    """The voice state that ``_TuneReader.music`` keeps in local variables while it reads, and
    whether its fast path applies (``plain``)."""
    sig = vs.sig
    plain = (prop_pitch and not vs.in_chord and vs.tuplet is None and vs.broken is None
             and -2 <= min(sig) and max(sig) <= 2 and _BARE_NOTES)
    return (vs.t, *(vs.last or _NO_LAST), vs.ties, vs.tie_letters, vs.bar_acc, sig,
            vs.voice.notes.append, _unit_tokens(vs.unit), vs.bar_count, plain)


def _propagated_pitch(vs: "_VoiceState", acc, li: int, lo, base: int) -> int:
    """A note's pitch with accidentals propagating by pitch: its own accidental (which then
    holds for its letter to the bar's end), else one written earlier in the bar, else the key
    signature's, where a tie into a new bar carries its accidental (as abc2midi does).
    (``_TuneReader.music``'s fast path does the same inline.)"""
    if acc is not None:
        vs.bar_acc[li] = acc
        return base + acc
    acc = vs.bar_acc.get(li) if vs.bar_acc else None
    if acc is not None:
        return base + acc
    pitch = base + vs.sig[li]
    if vs.tie_letters:
        tp = vs.tie_letters.get(lo)
        if tp is not None and pitch not in vs.ties and tp in vs.ties:
            pitch = tp
    return pitch


def _store_hot_state(vs: "_VoiceState", t, lx, lt0, ld, llo, ties, tie_letters, bar_acc,
                     bar_count, used) -> None:
    """Write ``_TuneReader.music``'s local copies back onto the voice."""
    vs.t = t
    vs.last = None if lx is None else (lx, lt0, ld, llo)
    vs.ties = ties
    vs.tie_letters = tie_letters
    vs.bar_acc = bar_acc
    vs.bar_count = bar_count
    if used:
        vs.used = True


class _VoiceState:
    __slots__ = ("vid", "voice", "t", "sig", "key", "unit", "bar_acc", "ties", "tie_letters",
                 "tuplet", "broken", "last", "bar_start", "bar_max", "markers", "meter",
                 "first_bar", "used", "bar_count", "in_chord", "chord", "unsorted", "repeats")

    def __init__(self, vid, voice, sig, key, unit, meter):
        self.vid = vid
        self.voice = voice
        self.t = 0
        self.sig = sig
        self.key = key
        self.unit = unit  # ticks of L
        self.bar_acc: dict = {}
        self.ties: dict[int, Note] = {}
        self.tie_letters: dict[tuple[int, int], int] = {}
        self.tuplet = None  # [p, q, remaining]
        self.broken = None  # (num, den) for the next note
        # (notes, start, duration, (letter, octave) of each) of the last note/chord/rest; for a
        # single note (Note, start, duration, (letter, octave))
        self.last = None
        self.bar_start = 0
        self.bar_max = 0
        self.markers: list[tuple[int, str, tuple[int, ...] | None]] = []
        self.meter = meter
        self.first_bar = None
        self.used = False
        self.bar_count = 0
        self.in_chord = False
        self.chord = None
        # whether a note may have been added out of (start, pitch) order (else the notes
        # need no sorting: see music())
        self.unsorted = False
        self.repeats = False  # a marker with a repeat sign or an ending


class _TuneReader:
    def __init__(self, lines: list[str], repeats: bool = True):
        self.lines = lines
        self.expand = repeats
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.piece = Piece(voices=[], tempos=[], meters=[])
        self.tpq = self.piece.tpq
        self.voices: dict[str, _VoiceState] = {}
        self.order: list[_VoiceState] = []
        self.cur: _VoiceState | None = None
        self.meter = (4, 4)
        self.meter_given = False
        self.unit_frac: tuple[int, int] | None = None
        self.key: Key | None = Key(0, "major", "C")
        self.sig = [0] * 7
        self.key_seen = False
        self.propagate = "pitch"
        self.pending_program: int | None = None
        self.pending_drum = False
        self.staves: list[list[str]] = []  # voice ids of each (parenthesised) %%score group

    def warn(self, msg: str, once: str | None = None) -> None:
        if once is not None:
            if once in self._warned:
                return
            self._warned.add(once)
        if len(self.warnings) < 50:
            self.warnings.append(msg)

    # -- voices
    def unit_ticks(self) -> int:
        if self.unit_frac is not None:
            a, b = self.unit_frac
        else:  # ABC 2.1 default: 1/16 for meters below 3/4, else 1/8
            a, b = (1, 16) if self.meter[0] / self.meter[1] < 0.75 else (1, 8)
        return max(1, round(self.tpq * 4 * a / b))

    def voice(self, vid: str, name: str = "") -> _VoiceState:
        vs = self.voices.get(vid)
        if vs is None:
            v = Voice(notes=[], program=0, name=name)
            vs = _VoiceState(vid, v, list(self.sig), self.key, self.unit_ticks(), self.meter)
            self.voices[vid] = vs
            self.order.append(vs)
        return vs

    def current(self) -> _VoiceState:
        if self.cur is None:
            self.cur = self.order[0] if self.order else self.voice("1")
        return self.cur

    def voice_field(self, text: str) -> None:
        parsed = _parse_voice_field(text)
        if parsed is None:
            return
        vid, name, prog, drum = parsed
        vs = self.voice(vid)
        self.cur = vs
        if name is not None and not vs.voice.name:
            vs.voice.name = name
            if not vs.used and vs.voice.program == 0:
                if prog is not None:
                    vs.voice.program = prog
                if drum:
                    vs.voice.drum = True

    def directive(self, line: str) -> None:
        if line[2:8].lower() in ("score ", "staves"):
            self.staves = [g.split() for g in re.findall(r"\(([^)]*)\)", line)]
            return
        what, value = _parse_directive(line)
        if what == "program":
            self._set_program(value)
        elif what == "drum":
            self._set_drum(value)
        elif what == "propagate":
            self.propagate = value

    def _set_program(self, prog: int) -> None:
        if self.cur is None and not self.order:
            self.pending_program = prog
            return
        self.current().voice.program = prog

    def _set_drum(self, drum: bool) -> None:
        if self.cur is None and not self.order:
            self.pending_drum = drum
            return
        self.current().voice.drum = drum

    # -- fields
    def field(self, f: str, val: str, inline: bool) -> None:
        if f == "K":
            key, sig, ok = _parse_key_value(val)
            sig = list(sig)
            if not ok and val.strip():
                if not re.search(r"clef|bass|treble|alto|tenor|perc|middle|transpose|octave",
                                 val):
                    self.warn(f"unrecognised key {val.strip()!r}; using C major", once="K:" + val)
            elif not ok and not val.strip():
                key, sig = Key(0, "major", "C"), [0] * 7
            if not ok and val.strip():
                # a clef-only K: keeps the current key
                return
            if self.cur is None and not self.key_seen:
                self.key, self.sig = key, sig
                self.piece.key = key
                for vs in self.order:
                    vs.sig, vs.key = list(sig), key
            else:
                vs = self.current()
                vs.sig, vs.key = list(sig), key
                vs.bar_acc = {}
                if self.piece.key is None and key is not None and not self.key_seen:
                    self.piece.key = key
            self.key_seen = True
        elif f == "M":
            m = _parse_meter(val)
            if m is None:
                if val.strip().lower() not in ("none", ""):
                    self.warn(f"unrecognised meter {val.strip()!r}", once="M:" + val)
                return
            if self.cur is None:
                self.meter = m
                self.meter_given = True
                for vs in self.order:
                    vs.meter = m
                    if self.unit_frac is None:
                        vs.unit = self.unit_ticks()
            else:
                vs = self.current()
                vs.meter = m
                self._add_meter(vs.t, m)
        elif f == "L":
            u = _parse_unit_field(val)
            if u is None:
                self.warn(f"unrecognised unit length {val.strip()!r}", once="L:" + val)
                return
            if self.cur is None:
                self.unit_frac = u
                for vs in self.order:
                    vs.unit = self.unit_ticks()
            else:
                self.current().unit = max(1, round(self.tpq * 4 * u[0] / u[1]))
        elif f == "Q":
            bpm = _parse_tempo(val)
            if bpm is None:
                self.warn(f"unrecognised tempo {val.strip()!r}", once="Q:" + val)
                return
            t = self.cur.t if self.cur is not None else 0
            self._add_tempo(t, bpm)
        elif f == "V":
            self.voice_field(val)
        elif f == "T":
            if not self.piece.title:
                self.piece.title = val.strip()

    def _add_tempo(self, t: int, bpm: float) -> None:
        ts = self.piece.tempos
        for i, x in enumerate(ts):
            if x.tick == t:
                if t == 0 or self.cur is self.order[0]:
                    ts[i] = Tempo(t, bpm)
                return
        ts.append(Tempo(t, bpm))

    def _add_meter(self, t: int, m: tuple[int, int]) -> None:
        ms = self.piece.meters
        for x in ms:
            if x.tick == t:
                return
        ms.append(Meter(t, m[0], m[1]))

    # -- the tune
    def read(self) -> tuple[Piece, list[str]]:
        try:
            self._read()
        except Exception as e:  # never let a malformed body escape as a traceback
            self.warn(f"stopped reading: {type(e).__name__}: {e}")
        return self._finish()

    def _read(self) -> None:
        in_header = True
        lines = self.lines
        i, n = 0, len(lines)
        music: list[str] = []  # music lines not read yet: nothing happens between them
        while i < n:
            line = lines[i]
            i += 1
            if line.startswith("%%"):
                if music:
                    self.music(music)
                    music = []
                self.directive(line)
                continue
            if "%" in line:
                line = _strip_comment(line)
            s = line.strip()
            if not s:
                continue
            fm = _FIELD_LINE.match(s) if s[1:2] == ":" else None
            if fm and (in_header or fm.group(1) in "KLMQVTPwWINRrsUZmH+" or
                       not _looks_like_music(s)):
                f, val = fm.group(1), fm.group(2)
                if f in ("w", "W", "+", "X"):
                    continue
                if music:
                    self.music(music)
                    music = []
                if in_header and f == "K":
                    self.field("K", val, False)
                    in_header = False
                    continue
                self.field(f, val, False)
                continue
            # a music line (continuations joined)
            while s.endswith("\\") and i < n:
                nxt = lines[i]
                i += 1
                if "%" in nxt:
                    nxt = _strip_comment(nxt)
                if _FIELD_LINE.match(nxt.strip()) and nxt.strip()[:1] in "wW":
                    continue
                s = s[:-1] + " " + nxt.strip()
            if s.endswith("\\"):
                s = s[:-1]
            if in_header:
                in_header = False
                if not self.key_seen:
                    self.warn("no K: field before the music", once="noK")
            music.append(s)
        if music:
            self.music(music)

    def music(self, lines: list[str]) -> None:
        """Read music lines (one after the other, nothing else between them)."""
        # The common tokens (notes, plain chords, bars, ties, rests outside tuplets, broken
        # rhythms and open chords, with accidentals propagating by pitch and a key signature
        # of at most double sharps and flats) are handled here with the voice's hot state in
        # local variables; every other token goes through _token with that state written back
        # first and read again after. Notes handled here need no range check (_token_info
        # sends notes that could leave 0..127 the general way) and come in time order: time
        # only goes forward here, so only a chord's own notes can be out of (start, pitch)
        # order; _token marks the voice unsorted when it adds notes or goes back in time.
        vs = self.current()
        prop_pitch = self.propagate == "pitch"
        # vs.last as four variables (lx None: no last): (notes, start, duration, (letter,
        # octave) of each), for one note (Note, start, duration, (letter, octave))
        (t, lx, lt0, ld, llo, ties, tie_letters, bar_acc, sig, add, cache, bar_count,
         plain) = _hot_state(vs, prop_pitch)
        used = False
        new = object.__new__  # notes made without Note() (see _bare_notes_ok)
        general = False  # in _token, which keeps the state on the voice itself
        try:
            for tok in chain.from_iterable(map(_TOKENS.findall, lines)):
                try:
                    info = cache[tok]
                except KeyError:
                    info = _token_info(tok, vs.unit, cache)
                k = info[0]
                if plain:
                    if k == 2:  # a note
                        _, acc, li, lo, base, dur, _x = info
                        if acc is None:
                            if bar_acc and li in bar_acc:  # an accidental earlier in the bar
                                pitch = base + bar_acc[li]
                            else:
                                pitch = base + sig[li]
                                # a tie into a new bar carries its accidental (as abc2midi does)
                                if tie_letters:
                                    tp = tie_letters.get(lo)
                                    if tp is not None and pitch not in ties and tp in ties:
                                        pitch = tp
                        else:
                            bar_acc[li] = acc
                            pitch = base + acc
                        if not ties:  # (an empty dict can stay: nothing else holds it)
                            lx = new(Note)
                            lx.pitch = pitch
                            lx.start = t
                            lx.duration = dur
                            lx.velocity = 80
                            add(lx)
                        else:
                            lx = ties.get(pitch)
                            ties = {}
                            if lx is not None and lx.start + lx.duration == t:  # tied on
                                lx.duration += dur
                            else:
                                lx = new(Note)
                                lx.pitch = pitch
                                lx.start = t
                                lx.duration = dur
                                lx.velocity = 80
                                add(lx)
                        lt0 = t  # (lx: one note, not wrapped in a tuple)
                        ld = dur
                        llo = lo
                        if tie_letters:
                            tie_letters = {}
                        t += dur
                        used = True
                        continue
                    if k == 3:  # spaces, slurs, decorations, chord symbols, ...
                        continue
                    if k == 6:  # a bar line
                        _, text, ending, repeat, _x = info
                        if vs.bar_max:
                            if vs.bar_max > t:
                                t = vs.bar_max
                            vs.bar_max = 0
                        if not bar_count and vs.first_bar is None:
                            vs.first_bar = t
                        bar_count += 1
                        vs.bar_start = t
                        if bar_acc:
                            bar_acc = vs.bar_acc = {}
                        if repeat:
                            vs.repeats = True
                        if text:
                            vs.markers.append((t, text, None))
                        if ending is not None:
                            vs.markers.append((t, "[", ending))
                        continue
                    if k == 8:  # a chord of plain notes: what "[", the notes and "]" do
                        dur = info[3]
                        if dur <= 0:
                            for acc, li, lo, base in info[1]:
                                if acc is not None:  # its accidental still holds in the bar
                                    bar_acc[li] = acc
                            self.warn("chord of zero length skipped", once="zero")
                            continue
                        # each note's pitch, then what _emit does for untied notes of one
                        # length (ties and tie_letters are only read until after the loop)
                        out = []
                        top = -1  # the highest pitch added so far
                        for acc, li, lo, base in info[1]:
                            if acc is None:
                                if bar_acc and li in bar_acc:
                                    pitch = base + bar_acc[li]
                                else:
                                    pitch = base + sig[li]
                                    if tie_letters:
                                        tp = tie_letters.get(lo)
                                        if tp is not None and pitch not in ties and tp in ties:
                                            pitch = tp
                            else:
                                bar_acc[li] = acc
                                pitch = base + acc
                            prev = ties.get(pitch) if ties else None
                            if prev is not None and prev.start + prev.duration == t:
                                prev.duration += dur
                                note = prev
                            else:
                                note = new(Note)
                                note.pitch = pitch
                                note.start = t
                                note.duration = dur
                                note.velocity = 80
                                add(note)
                                if pitch <= top:
                                    vs.unsorted = True
                                top = pitch
                            out.append(note)
                        if ties:
                            ties = {}
                        if tie_letters:
                            tie_letters = {}
                        lx, lt0, ld, llo = out, t, dur, info[5]
                        t += dur
                        used = True
                        continue
                    if k == 12:  # a tie
                        if lx is not None:
                            if type(lx) is Note:
                                ties[lx.pitch] = lx
                                tie_letters[llo] = lx.pitch
                            else:
                                for x, lo in zip(lx, llo):
                                    ties[x.pitch] = x
                                    tie_letters[lo] = x.pitch
                        continue
                    if k == 14:  # a rest
                        dur = info[1]
                        if ties:
                            ties = {}
                        if tie_letters:
                            tie_letters = {}
                        lx, lt0, ld, llo = (), t, dur, ()
                        t += dur
                        used = True
                        continue
                elif k == 3:
                    continue
                # anything else: through the general code, on the voice's state
                _store_hot_state(vs, t, lx, lt0, ld, llo, ties, tie_letters, bar_acc,
                                 bar_count, used)
                used = False
                general = True
                self._token(vs, k, info, prop_pitch)
                general = False
                vs = self.current()
                (t, lx, lt0, ld, llo, ties, tie_letters, bar_acc, sig, add, cache, bar_count,
                 plain) = _hot_state(vs, prop_pitch)
        except Exception:  # "stopped reading": the voice's state as it was at the error
            vs.unsorted = True  # (sorting is always right; _token may have added notes)
            if not general:
                _store_hot_state(vs, t, lx, lt0, ld, llo, ties, tie_letters, bar_acc,
                                 bar_count, used)
            raise
        _store_hot_state(vs, t, lx, lt0, ld, llo, ties, tie_letters, bar_acc, bar_count, used)

    def _token(self, vs: _VoiceState, k: int, info: tuple, prop_pitch: bool) -> None:
        """One token of any kind (``info`` from _token_info) on the voice's state."""
        notes = vs.voice.notes
        n0 = len(notes)
        t0 = vs.t
        if k == 2 or k == 102:
            _, acc, li, lo, base, _dur, (n, d, ptext) = info
            if not prop_pitch:
                pitch, lo = self._pitch(vs, ptext)
            else:
                pitch = _propagated_pitch(vs, acc, li, lo, base)
            if vs.in_chord:
                vs.chord.append([pitch, lo, n, d, False])
                return
            dur = self._duration(vs, n, d)
            if dur <= 0:
                self.warn("note of zero length skipped", once="zero")
                return
            # one untied note (what _emit does for a single item)
            t = vs.t
            old = vs.ties
            if not 0 <= pitch <= 127:
                self.warn("note outside the MIDI range skipped", once="range")
                vs.last = ((), t, dur, ())
            else:
                prev = old.get(pitch) if old else None
                if prev is not None and prev.start + prev.duration == t:
                    prev.duration += dur
                    note = prev
                else:
                    note = Note(pitch, t, dur)
                    notes.append(note)
                vs.last = (note, t, dur, lo)  # one note: not wrapped in tuples
            if old:
                vs.ties = {}
            if vs.tie_letters:
                vs.tie_letters = {}
            vs.t = t + dur
            vs.used = True
        elif k == 6 or k == 106:
            self.bar(vs, info[4])
        elif k == 8 or k == 108:  # a chord of plain notes: what "[", the notes and "]" do
            if not prop_pitch:
                items = [self._pitch(vs, x) for x in info[2]]
            else:
                items = [(_propagated_pitch(vs, acc, li, lo, base), lo)
                         for acc, li, lo, base in info[1]]
            vs.in_chord = False
            vs.chord = None
            n, d = _length_of(info[4])
            dur = self._duration(vs, n, d)
            if dur <= 0:
                self.warn("chord of zero length skipped", once="zero")
                return
            # what _emit does for untied notes of one length
            t = vs.t
            old = vs.ties
            out, los = [], []
            for pitch, lo in items:
                if not 0 <= pitch <= 127:
                    self.warn("note outside the MIDI range skipped", once="range")
                    continue
                prev = old.get(pitch) if old else None
                if prev is not None and prev.start + prev.duration == t:
                    prev.duration += dur
                    note = prev
                else:
                    note = Note(pitch, t, dur)
                    notes.append(note)
                out.append(note)
                los.append(lo)
            vs.ties = {}
            vs.tie_letters = {}
            vs.last = (out, t, dur, los)
            vs.t = t + dur
            vs.used = True
        elif k == 9:
            vs.in_chord = True
            vs.chord = []
        elif k == 11:
            self.chord_close(vs, info[1])
        elif k == 12:
            if vs.in_chord:
                if vs.chord:
                    vs.chord[-1][4] = True
            elif vs.last is not None:
                x = vs.last[0]
                if type(x) is Note:
                    vs.ties[x.pitch] = x
                    vs.tie_letters[vs.last[3]] = x.pitch
                else:
                    for x, lo in zip(vs.last[0], vs.last[3]):
                        vs.ties[x.pitch] = x
                        vs.tie_letters[lo] = x.pitch
        elif k == 14 or k == 114:
            self.rest(vs, info[2])
        elif k == 4:
            text = info[1]
            f, val = text[1], text[3:-1]
            if f == "V":
                self.field("V", val, True)
            elif f in "KLMQ":
                self.field(f, val, True)
            elif f in "IrNRPT":
                pass
            else:
                self.warn(f"ignored inline field {text!r}", once="if" + f)
        elif k == 17:
            p = int(info[1])
            if not 2 <= p <= 32:
                self.warn(f"ignored tuplet ({p}", once="tup")
                return
            q = info[2]
            r = info[3]
            compound = vs.meter[1] >= 8 and vs.meter[0] % 3 == 0 and vs.meter[0] > 3
            if q:
                qv = int(q)
            elif p in (2, 4, 8):
                qv = 3
            elif p in (3, 6):
                qv = 2
            else:
                qv = 3 if compound else 2
            rv = int(r) if r else p
            if qv > 0 and rv > 0:
                vs.tuplet = [p, qv, rv]
        elif k == 20:
            self.broken(vs, info[1])
        elif k == 5:
            self.ending(vs, info[1])
        elif k == 16:
            self.multi_rest(vs, info[1])
        elif k == 22:
            vs.bar_max = max(vs.bar_max, vs.t)
            vs.t = vs.bar_start
            vs.last = None
        elif k == 23:
            self.warn(f"ignored character {info[1]!r}", once="ch" + info[1])
        if len(notes) != n0 or vs.t < t0:  # (music() adds notes going forward only)
            vs.unsorted = True

    def _duration(self, vs: _VoiceState, num: int, den: int) -> int:
        n = vs.unit * num
        d = den
        tup = vs.tuplet
        if tup is not None and not vs.in_chord:
            n *= tup[1]
            d *= tup[0]
            tup[2] -= 1
            if tup[2] <= 0:
                vs.tuplet = None
        if vs.broken is not None and not vs.in_chord:
            bn, bd = vs.broken
            n *= bn
            d *= bd
            vs.broken = None
        if n <= 0:
            return 0
        return n // d if n % d == 0 else max(1, round(n / d))

    def _pitch(self, vs: _VoiceState, text: str) -> tuple[int, tuple[int, int]]:
        acc = None
        j = 0
        if text[0] in "^_=":
            j = 2 if text[:2] in ("^^", "__") else 1
            acc = _ACC_VALUE[text[:j]]
        c = text[j]
        octave = 5 if c.islower() else 4
        li = _LETTER_INDEX[c.upper()]
        for ch in text[j + 1:]:
            octave += 1 if ch == "'" else -1
        lo = (li, octave)
        prop = self.propagate
        if acc is None:
            if prop == "pitch":
                acc = vs.bar_acc.get(li)
            elif prop == "octave":
                acc = vs.bar_acc.get(lo)
            if acc is None:
                acc = vs.sig[li]
                # a tie into a new bar carries its accidental (as abc2midi and most readers do)
                tp = vs.tie_letters.get(lo)
                if tp is not None:
                    p0 = 12 * (octave + 1) + _LETTER_PC[li] + acc
                    if p0 not in vs.ties and tp in vs.ties:
                        return tp, lo
        else:
            if prop == "pitch":
                vs.bar_acc[li] = acc
            elif prop == "octave":
                vs.bar_acc[lo] = acc
        return 12 * (octave + 1) + _LETTER_PC[li] + acc, lo

    def chord_close(self, vs, ltext) -> None:
        chord = vs.chord or []
        vs.in_chord = False
        vs.chord = None
        n, d = _length_of(ltext)
        if not chord:
            return
        # each note: its own length times the outer one; the chord lasts its first note's
        first = chord[0]
        fn, fd = first[2] * n, first[3] * d
        save_t, save_b = (list(vs.tuplet) if vs.tuplet else None), vs.broken
        dur = self._duration(vs, fn, fd)
        notes = []
        for pitch, lo, cn, cd, tied in chord:
            cn *= n
            cd *= d
            if cn * fd == cd * fn:
                if dur > 0:
                    notes.append((pitch, lo, dur, tied))
            else:
                cur_t, cur_b = vs.tuplet, vs.broken
                vs.tuplet, vs.broken = (list(save_t) if save_t else None), save_b
                x = self._duration(vs, cn, cd)
                vs.tuplet, vs.broken = cur_t, cur_b
                if x > 0:
                    notes.append((pitch, lo, x, tied))
        if dur <= 0 or not notes:
            self.warn("chord of zero length skipped", once="zero")
            return
        self._emit(vs, notes, dur)

    def _emit(self, vs: _VoiceState, items, dur: int) -> None:
        t = vs.t
        old = vs.ties
        ties: dict[int, Note] = {}
        letters: dict[tuple[int, int], int] = {}
        out, los = [], []
        vnotes = vs.voice.notes
        for pitch, lo, d, tied in items:
            if not 0 <= pitch <= 127:
                self.warn("note outside the MIDI range skipped", once="range")
                continue
            prev = old.get(pitch) if old else None
            if prev is not None and prev.start + prev.duration == t:
                prev.duration += d
                note = prev
            else:
                note = Note(pitch, t, d)
                vnotes.append(note)
            out.append(note)
            los.append(lo)
            if tied:
                ties[pitch] = note
                letters[lo] = pitch
        vs.ties = ties
        vs.tie_letters = letters
        vs.last = (out, t, dur, los)
        vs.t = t + dur
        vs.used = True

    def rest(self, vs, ltext) -> None:
        n, d = _length_of(ltext)
        if vs.in_chord:
            return
        dur = self._duration(vs, n, d)
        vs.ties = {}
        vs.tie_letters = {}
        vs.last = ((), vs.t, dur, ())
        vs.t += dur
        vs.used = True

    def multi_rest(self, vs, num) -> None:
        bars = int(num) if num else 1
        bar = vs.meter[0] * self.tpq * 4 // vs.meter[1]
        vs.ties = {}
        vs.last = ([], vs.t, bar * bars, [])
        vs.t += bar * max(1, min(bars, 1000))
        vs.used = True

    def broken(self, vs, text: str) -> None:
        k = len(text)
        if vs.last is None:
            return
        notes, start, dur, los = vs.last
        if type(notes) is Note:
            notes, los = (notes,), (los,)
        if text[0] == ">":
            new = dur * (2 ** (k + 1) - 1) // (2 ** k)
            vs.broken = (1, 2 ** k)
        else:
            new = dur // (2 ** k)
            vs.broken = (2 ** (k + 1) - 1, 2 ** k)
        delta = new - dur
        if start + new < vs.bar_start or new <= 0:
            vs.broken = None
            return
        for x in notes:
            if x.start + x.duration == start + dur:
                x.duration = max(1, x.duration + delta)
        vs.t += delta
        vs.last = (notes, start, new, los)

    def bar(self, vs, text: str) -> None:
        if vs.in_chord:
            self.warn("chord not closed before a bar line", once="chord")
            self.chord_close(vs, "")
            vs.t = max(vs.t, vs.bar_max)
            vs.bar_max = 0
        elif vs.bar_max:  # (a time before 0, after a broken rhythm on a huge rest, stays)
            if vs.bar_max > vs.t:
                vs.t = vs.bar_max
            vs.bar_max = 0
        bt = _BAR_CACHE.get(text)
        if bt is None:
            bt = _bar_parts(text)
        text, ending = bt
        if vs.bar_count == 0 and vs.first_bar is None:
            vs.first_bar = vs.t
        vs.bar_count += 1
        vs.bar_start = vs.t
        vs.bar_acc = {}
        vs.tuplet = None
        if text:
            vs.markers.append((vs.t, text, None))
            if ":" in text or text == "[":
                vs.repeats = True
        if ending is not None:
            vs.markers.append((vs.t, "[", ending))
            vs.repeats = True

    def ending(self, vs, nums: str) -> None:
        vs.markers.append((vs.t, "[", _ending_numbers(nums)))
        vs.repeats = True

    # -- finishing: repeats, anacrusis, the Piece
    def _merge_layers(self, piece: Piece) -> None:
        """A voice without a name in a %%score staff group, on the instrument of the named
        voice before it, is a layer of that voice (as the writer writes overlapping notes)."""
        owner = None
        for vid in (v for group in self.staves for v in group):
            vs = self.voices.get(vid)
            if vs is None or not vs.used or vs.voice not in piece.voices:
                continue
            v = vs.voice
            if owner is None or v.name or (v.program, v.drum) != (owner.program, owner.drum):
                owner = v
                continue
            owner.notes.extend(v.notes)
            owner.notes.sort(key=_NOTE_ORDER)
            piece.voices.remove(v)

    def _finish(self) -> tuple[Piece, list[str]]:
        piece = self.piece
        if self.pending_program is not None and self.order:
            self.order[0].voice.program = self.pending_program
        if self.pending_drum and self.order:
            self.order[0].voice.drum = True
        used = [vs for vs in self.order if vs.used]
        spans = None
        for vs in used:
            v = vs.voice
            unsorted = vs.unsorted
            if self.expand and vs.repeats:
                sp = _repeat_spans(vs.markers, vs.t)
                if sp is not None:
                    v.notes = _apply_spans(v.notes, sp)
                    unsorted = True
                    if spans is None:
                        spans = sp
            if unsorted:  # else already in (start, pitch) order, every pair distinct
                v.notes.sort(key=_NOTE_ORDER)  # what Voice.sort does
            piece.voices.append(v)
        self._merge_layers(piece)
        if spans is not None:
            piece.tempos = _map_events(piece.tempos, spans, lambda e, t: Tempo(t, e.bpm))
            piece.meters = _map_events(piece.meters, spans,
                                       lambda e, t: Meter(t, e.numerator, e.denominator))
        if not piece.tempos or piece.tempos[0].tick != 0:
            piece.tempos.insert(0, Tempo(0, piece.tempos[0].bpm if piece.tempos else 120.0))
        m = self.meter
        piece.meters.insert(0, Meter(0, m[0], m[1]))
        piece.meters = _dedupe_ticks(sorted(piece.meters, key=lambda x: x.tick))
        piece.tempos = _dedupe_ticks(sorted(piece.tempos, key=lambda x: x.tick))
        if used:
            first = used[0]
            bar = m[0] * self.tpq * 4 // m[1]
            fb = first.first_bar
            if fb is not None and 0 < fb < bar and first.bar_count > 1 and self.meter_given:
                piece.anacrusis = fb
        return piece, self.warnings


def _strip_comment(line: str) -> str:
    i = line.find("%")
    while i > 0 and line[i - 1] == "\\":
        i = line.find("%", i + 1)
    return line if i < 0 else line[:i]


def _looks_like_music(s: str) -> bool:
    return "|" in s


_BAR_ENDING = re.compile(r"(\d+(?:[,-]\d+)*)$")
_BAR_CACHE: dict[str, tuple[str, tuple[int, ...] | None]] = {}


def _bar_parts(text: str) -> tuple[str, tuple[int, ...] | None]:
    """A bar line's text split into the bar sign and the ending numbers after it (cached)."""
    ending = None
    m = _BAR_ENDING.search(text)
    key = text
    if m:
        ending = _ending_numbers(m.group(1))
        text = text[:m.start()]
    if len(_BAR_CACHE) > 4096:
        _BAR_CACHE.clear()
    _BAR_CACHE[key] = (text, ending)
    return text, ending


def _ending_numbers(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if a.isdigit() and b.isdigit() and int(b) - int(a) < 20:
                out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
    return tuple(out) or (1,)


def _repeat_spans(markers, end: int):
    """Play order of a voice with repeats and endings, as [(start, end)] tick spans."""
    # cut points: every marker position; each section between cuts carries flags
    pts = sorted({0, end, *(t for t, _, _ in markers if 0 <= t <= end)})
    if len(pts) < 2:
        return None
    idx = {t: i for i, t in enumerate(pts)}
    nsec = len(pts) - 1
    start_rep = [False] * nsec
    end_rep = [False] * nsec  # repeat sign at the END of section i
    ending: list = [None] * nsec
    closes = [False] * nsec  # section i ends an ending region (double bar / final)
    for t, kind, nums in markers:
        i = idx.get(t)
        if i is None:
            continue
        if kind == "[":
            if i < nsec:
                ending[i] = nums
            continue
        colon_before = kind.startswith(":")
        colon_after = kind.endswith(":")
        if kind.strip(":") == "" and len(kind) >= 2:  # "::"
            colon_before = colon_after = True
        if colon_before and i > 0:
            end_rep[i - 1] = True
        if colon_after and i < nsec:
            start_rep[i] = True
        if ("||" in kind or "]" in kind) and i > 0:
            closes[i - 1] = True
    # endings extend until a repeat end, a double bar, or the next ending
    cur = None
    for i in range(nsec):
        if ending[i] is not None:
            cur = ending[i]
        elif cur is not None:
            if start_rep[i]:
                cur = None
            else:
                ending[i] = cur
        if end_rep[i] or closes[i]:
            cur = None
    spans: list[tuple[int, int]] = []
    i, sec, npass = 0, 0, 1
    done: set[int] = set()
    guard = 0
    while i < nsec and guard < 10000:
        guard += 1
        if start_rep[i] and i != sec and (i not in done or npass == 1):
            sec, npass = i, 1
        e = ending[i]
        if e is not None and npass not in e:
            i += 1
            if i < nsec and ending[i] is None and npass > 1:
                sec, npass = i, 1
            continue
        a, b = pts[i], pts[i + 1]
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
        if end_rep[i] and i not in done:
            done.add(i)
            npass += 1
            i = sec
            continue
        if end_rep[i]:
            sec, npass = i + 1, 1
        elif e is not None and npass > 1 and (i + 1 >= nsec or ending[i + 1] is None):
            sec, npass = i + 1, 1
        i += 1
    return spans


def _apply_spans(notes: list[Note], spans) -> list[Note]:
    notes = sorted(notes, key=lambda n: n.start)
    starts = [n.start for n in notes]
    out = []
    pos = 0
    for a, b in spans:
        j = bisect_right(starts, a - 1)
        while j < len(notes) and notes[j].start < b:
            n = notes[j]
            dur = min(n.duration, b - n.start)
            out.append(Note(n.pitch, pos + n.start - a, dur, n.velocity))
            j += 1
        pos += b - a
    return out


def _map_events(events, spans, make):
    out = []
    pos = 0
    for a, b in spans:
        for e in events:
            if a <= e.tick < b or (e.tick == 0 and a == 0):
                out.append(make(e, pos + e.tick - a))
        pos += b - a
    return out


def _dedupe_ticks(xs):
    out = []
    for x in xs:
        if out and out[-1].tick == x.tick:
            continue
        if out and type(x) is Tempo and out[-1].bpm == x.bpm:
            continue
        if out and type(x) is Meter and (out[-1].numerator, out[-1].denominator) == (
                x.numerator, x.denominator):
            continue
        out.append(x)
    return out


def _as_text(text) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("not ABC text: the input is not UTF-8") from None
    if not isinstance(text, str):
        raise UserError(f"not ABC text: got {type(text).__name__}")
    if "\x00" in text:
        raise UserError("not ABC text: the input contains NUL bytes")
    return text


def _split_tunes(text: str) -> list[list[str]]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if "\nX:" not in text:  # one tune from the first line, or none marked
        return [lines]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("X:")]
    if not starts:
        return [lines]
    header = [ln for ln in lines[:starts[0]] if ln.startswith("%%")]
    tunes = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        tunes.append(header + lines[a:b])
    return tunes


def read_abc_tunes(text: str, *, repeats: bool = True) -> list[tuple[Piece, list[str]]]:
    """Every tune of an ABC text, each as (Piece, warnings). Never raises on a malformed body;
    input that is not text (bytes that are not UTF-8, NUL bytes) is a UserError.

    Repeats and endings are played out as abc2midi does (a ``:|`` without ``|:`` goes back to
    the previous repeat or the start); ``repeats=False`` reads the music as written, once."""
    text = _as_text(text)
    return [_TuneReader(lines, repeats).read() for lines in _split_tunes(text)]


def read_abc(text: str, *, repeats: bool = True) -> tuple[Piece, list[str]]:
    """The first tune of an ABC text as (Piece, warnings); see read_abc_tunes."""
    text = _as_text(text)
    tunes = _split_tunes(text)
    return _TuneReader(tunes[0], repeats).read()


# ---- ABC inside prose ---------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_HEADER_LINE = re.compile(r"^\s*[XTMLKQV]:\s*\S")
_X_LINE = re.compile(r"^\s*X:\s*\d")


def extract_abc(text: str) -> str:
    """The ABC in a language model's answer: the first fenced block that holds ABC (or is
    tagged ``abc``), else the lines from the first header field on; the text itself otherwise."""
    if not isinstance(text, str):
        text = _as_text(text)
    for m in _FENCE.finditer(text) if "```" in text else ():
        lang, body = m.group(1).lower(), m.group(2)
        if lang == "abc" or any(_HEADER_LINE.match(ln) for ln in body.split("\n")):
            return body.strip() + "\n"
    lines = text.split("\n")
    start = None
    for i, ln in enumerate(lines):
        if _X_LINE.match(ln):
            start = i
            break
    if start is None:
        for i, ln in enumerate(lines):
            if _HEADER_LINE.match(ln):
                start = i
                break
    if start is None:
        return text.strip() + ("\n" if text.strip() else "")
    end = len(lines)
    for i in range(start, end):
        ln = lines[i]
        if "|" in ln:  # a bar line: never prose (the common case, checked first)
            continue
        s = ln.strip()
        if s and not _FIELD_LINE.match(s) and not s.startswith("%") and _is_prose(s):
            end = i
            break
    out = list(map(str.rstrip, lines[start:end]))
    # short closing prose after the last music line ("Enjoy playing it!")
    while out and (not out[-1].strip() or _is_closing_prose(out[-1].strip())):
        out.pop()
    return "\n".join(out).strip() + "\n"


def _is_prose(s: str) -> bool:
    if "|" in s:
        return False
    words = _WORDS3.findall(s)
    return len(words) >= 4 and sum(len(w) for w in words) > 0.5 * len(s)


_WORDS3 = re.compile(r"[A-Za-z]{3,}")


def _is_closing_prose(s: str) -> bool:
    """A line of words after the music: no bar line, chord or field, at least two words, mostly
    letters, and a word of three or more letters that are not all note names (``abc def`` is
    music, ``Enjoy playing it!`` is not)."""
    if "|" in s or _FIELD_LINE.match(s) or s.startswith("%") or "[" in s:
        return False
    words = re.findall(r"[A-Za-z']+", s)
    if len(words) < 2 or sum(len(w) for w in words) < 0.6 * len(s.replace(" ", "")):
        return False
    return any(len(w) >= 3 and re.search(r"[h-wyH-WY]", w) for w in words)


def tune_numbers(text: str) -> list[int | None]:
    """The X: number of each tune ``read_abc_tunes`` returns (None where it has none)."""
    out: list[int | None] = []
    for lines in _split_tunes(_as_text(text)):
        num = None
        for ln in lines:
            if ln.startswith("X:"):
                m = re.match(r"X:\s*(\d+)", ln)
                num = int(m.group(1)) if m else None
                break
        out.append(num)
    return out
