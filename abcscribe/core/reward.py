"""The music-aware reward: how close a predicted ABC transcription is to a reference.

The seed's four components are losses in [0, 1] (0 = perfect):

- ``tempo``: |predicted - reference| quarter-note BPM, linear up to ``TEMPO_LINEAR_BPM`` then
  exponential, capped at 1 (see :func:`tempo_loss`).
- ``metre``: numerator, denominator and bar length compared separately (see :func:`metre_loss`).
- ``pitch``: per voice, Levenshtein distance between the chord sequences (a chord or single note
  is one unit), normalised by the longer sequence; voices matched by the assignment that
  minimises the total distance; a missing or extra voice costs 1 (see :func:`pitch_loss`).
- ``instrument``: per matched voice, 0 for the same GM program, ``FAMILY_LOSS`` for the same GM
  family, else graded by string similarity of the GM names (see :func:`instrument_loss`).

``loss = sum(w_k * loss_k) / sum(w_k)`` with :data:`DEFAULT_WEIGHTS` (the seed's 0.5, 0.15,
0.15, 0.2) and ``reward = 1 - loss``. Beyond the seed, every :class:`Score` also carries
``rhythm`` (a loss over onset positions in beats, matched per voice like pitch) and the
transcription metrics ``note_precision``/``note_recall``/``note_f1`` (mir_eval's convention:
same MIDI pitch, onsets within 50 ms, one-to-one maximum matching) and ``note_f1_offset`` (also
offsets within max(50 ms, 20% of the reference note's duration)). ``rhythm`` and ``note_f1``
(as ``1 - note_f1``) can be weighted into the loss; their default weight is 0.

A prediction with no readable notes scores reward 0 (every loss 1); a reference that cannot be
read is a :class:`UserError`. Nothing here raises on a prediction, returns NaN, or leaves [0, 1].
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Sequence

import Levenshtein

from abcscribe.core import gm
from abcscribe.core.errors import UserError
from abcscribe.core.notes import TPQ, Meter, Piece, Voice

# ---- constants (documented in the man page too) -----------------------------------------

DEFAULT_WEIGHTS = {
    "pitch": 0.5, "metre": 0.15, "tempo": 0.15, "instrument": 0.2, "rhythm": 0.0, "note_f1": 0.0,
}
WEIGHT_NAMES = tuple(DEFAULT_WEIGHTS)

#: tempo: loss grows by TEMPO_LINEAR_SLOPE per BPM up to TEMPO_LINEAR_BPM (0.1 at 10 BPM), then
#: multiplies by e every TEMPO_EXP_SCALE BPM, reaching the cap of 1 at about 56 BPM off.
TEMPO_LINEAR_BPM = 10.0
TEMPO_LINEAR_SLOPE = 0.01
TEMPO_EXP_SCALE = 20.0

#: metre: three parts, each "linear to x0 (value y0 there), then exponential with scale s",
#: capped at 1, combined with weights that sum to 1.
#:   numerator   x = |n_pred - n_ref|                   x0=1    y0=0.1  s=2
#:   denominator x = |log2(d_pred / d_ref)|             x0=1    y0=0.2  s=1
#:   bar length  x = |log2((n/d)_pred / (n/d)_ref)|     x0=0.2  y0=0.4  s=0.3
#: so 4/4 vs 2/2 ~ 0.07 and 6/8 vs 3/4 ~ 0.09 (same bar length), 7/8 vs 4/4 ~ 0.32,
#: 3/4 vs 4/4 ~ 0.51, 2/4 vs 4/4 ~ 0.63, 12/8 vs 4/4 ~ 0.84.
METRE_PARTS = {
    "numerator": (1.0, 0.1, 2.0),
    "denominator": (1.0, 0.2, 1.0),
    "bar": (0.2, 0.4, 0.3),
}
METRE_WEIGHTS = {"numerator": 0.2, "denominator": 0.2, "bar": 0.6}

#: instrument: loss for a different program of the same GM family; across families the loss is
#: OTHER_FAMILY_LOSS + (1 - OTHER_FAMILY_LOSS) * (1 - similarity of the GM names).
FAMILY_LOSS = 0.25
OTHER_FAMILY_LOSS = 0.5

#: rhythm: per matched voice, 1 - F1 of chord onsets (in quarter-note beats from the start)
#: matched one-to-one within this many beats (a 32nd note).
RHYTHM_TOLERANCE_BEATS = 0.125

#: note metrics (mir_eval's defaults)
ONSET_TOLERANCE = 0.05
OFFSET_RATIO = 0.2
OFFSET_MIN_TOLERANCE = 0.05
_DECIMALS = 4  # mir_eval rounds distances to 4 decimals before comparing

# the voice assignment minimises pitch distance; instrument and rhythm only break ties
_TIE_BREAK = 1e-3
# above this many voices the assignment uses scipy instead of trying every permutation
_BRUTE_FORCE_VOICES = 5


@dataclass
class Score:
    """One pair's scores. ``pitch``..``rhythm`` are losses (0 best); ``note_*`` are scores (1
    best, None when not computed); ``parse_warnings`` counts the prediction's reader warnings."""

    reward: float
    loss: float
    pitch: float
    metre: float
    tempo: float
    instrument: float
    rhythm: float
    note_f1: float | None = None
    note_precision: float | None = None
    note_recall: float | None = None
    note_f1_offset: float | None = None
    parse_warnings: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


METRICS = tuple(f.name for f in fields(Score))


# ---- weights --------------------------------------------------------------------------------


def parse_weights(text: str) -> dict[str, float]:
    """``"pitch=0.5,metre=0.15,..."`` -> weights. Names not given weigh 0; the loss divides by
    the sum, so weights need not sum to 1. UserError on unknown names, negative or all-zero."""
    from abcscribe.core.files import parse_kv

    return check_weights(parse_kv(text, "--weights"))


def check_weights(weights: dict[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    out = {k: 0.0 for k in WEIGHT_NAMES}
    for k, v in weights.items():
        if k not in out:
            raise UserError(f"--weights: unknown component {k!r} (one of {', '.join(WEIGHT_NAMES)})")
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise UserError(f"--weights: {k}={v} must be a finite number >= 0")
        out[k] = v
    if sum(out.values()) <= 0:
        raise UserError("--weights: at least one weight must be > 0")
    return out


# ---- the curve shared by tempo and metre ----------------------------------------------------


def _lin_exp(x: float, x0: float, y0: float, scale: float) -> float:
    """y0 * x / x0 up to x0, then y0 * exp((x - x0) / scale), capped at 1."""
    if not math.isfinite(x):
        return 1.0
    x = abs(x)
    if x <= x0:
        return y0 * x / x0
    e = (x - x0) / scale
    return 1.0 if e > 50 else min(1.0, y0 * math.exp(e))


def tempo_loss(ref_bpm: float, pred_bpm: float) -> float:
    """Tempo loss from two quarter-note BPMs: 0.01 per BPM up to 10 BPM (0.1 at 10), then
    0.1 * exp((d - 10) / 20), capped at 1 (about 56 BPM off). Continuous, strictly increasing
    until the cap. A missing/non-positive predicted tempo is loss 1."""
    try:
        d = abs(float(pred_bpm) - float(ref_bpm))
    except (TypeError, ValueError):
        return 1.0
    if not (math.isfinite(d) and pred_bpm > 0):
        return 1.0
    return _lin_exp(d, TEMPO_LINEAR_BPM, TEMPO_LINEAR_SLOPE * TEMPO_LINEAR_BPM, TEMPO_EXP_SCALE)


def metre_loss(ref: Meter | tuple[int, int], pred: Meter | tuple[int, int]) -> float:
    """Metre loss from two time signatures: numerator, denominator and bar length each through
    a linear-then-exponential curve (``METRE_PARTS``), weighted 0.2/0.2/0.6. 0 when equal;
    4/4 vs 2/2 and 6/8 vs 3/4 cost little, 3/4 vs 4/4 much more."""
    try:
        rn, rd = _nd(ref)
        pn, pd = _nd(pred)
    except (TypeError, ValueError, AttributeError):
        return 1.0
    if min(rn, rd, pn, pd) <= 0:
        return 1.0
    xs = {
        "numerator": abs(pn - rn),
        "denominator": abs(math.log2(pd / rd)),
        "bar": abs(math.log2((pn / pd) / (rn / rd))),
    }
    total = sum(METRE_WEIGHTS[k] * _lin_exp(x, *METRE_PARTS[k]) for k, x in xs.items())
    return _unit(total)


def _nd(m) -> tuple[int, int]:
    if isinstance(m, Meter):
        return int(m.numerator), int(m.denominator)
    n, d = m
    return int(n), int(d)


# ---- per-voice comparisons ---------------------------------------------------------------


class _VoiceView:
    """What the per-voice losses need from a Voice, computed once."""

    __slots__ = ("chords", "onsets", "program", "drum", "_code", "_tuples")

    def __init__(self, v: Voice, tpq: int):
        starts: list[int] = []
        chords: list = []  # a single pitch as an int, a chord as a tuple (sorted below)
        tuples: list[int] = []  # where chords has a tuple
        unsorted: list[int] = []  # ... one not in ascending order (readers give them sorted)
        last = None
        for n in v.notes:  # readers give notes in time order: one pass, no dict
            t = n.start
            if t == last:
                g = chords[-1]
                p = n.pitch
                if type(g) is tuple:
                    if not p >= g[-1]:
                        unsorted.append(len(chords) - 1)
                    chords[-1] = g + (p,)
                else:
                    if not p >= g:
                        unsorted.append(len(chords) - 1)
                    chords[-1] = (g, p)
                    tuples.append(len(chords) - 1)
            elif last is None or t > last:
                starts.append(t)
                chords.append(n.pitch)
                last = t
            else:  # out of order: group by onset the slow way
                by: dict[int, list[int]] = {}
                for m in v.notes:
                    by.setdefault(m.start, []).append(m.pitch)
                starts = sorted(by)
                chords = [by[t][0] if len(by[t]) == 1 else tuple(by[t]) for t in starts]
                tuples = unsorted = [i for i, u in enumerate(chords) if type(u) is tuple]
                break
        for i in unsorted:
            chords[i] = tuple(sorted(chords[i]))
        self.chords = chords
        self._tuples = tuples
        self.onsets = starts if tpq == TPQ else [t * TPQ / tpq for t in starts]
        self.program = int(v.program)
        self.drum = bool(v.drum)
        self._code = None

    def code(self, table: dict) -> str:
        """The chord sequence as a string, one character per unit: a single pitch in
        0..0xFFFF is its own code point, any other unit the character ``table`` gives it (a
        dict shared by all voices compared with each other, so equal units get equal codes)."""
        c = self._code
        if c is not None:
            return c
        u = self.chords
        tuples = self._tuples
        if tuples:  # chords among pitches 0..255: the pitches' characters, then the chords'
            ints = list(u)
            for i in tuples:
                ints[i] = 0
            try:
                chars = list(bytes(ints).decode("latin-1"))
            except (TypeError, ValueError):
                chars = None
            if chars is not None:
                get = table.get
                for i in tuples:
                    x = u[i]
                    c = get(x)
                    if c is None:
                        c = table[x] = _unit_code(x, len(table))
                    chars[i] = c
                return "".join(chars)
        try:  # pitches 0..255 only (MIDI's are): each its own character, whatever the table
            c = self._code = bytes(u).decode("latin-1")
            return c
        except (TypeError, ValueError):
            pass
        if set(map(type, u)) <= {int} and (not u or (min(u) >= 0 and max(u) < 0x10000)):
            c = self._code = "".join(map(chr, u))  # plain pitches: the same for every table
            return c
        out = []
        get = table.get
        for x in u:
            if type(x) is int and 0 <= x < 0x10000:
                out.append(chr(x))
            else:
                c = get(x)
                if c is None:
                    c = table[x] = _unit_code(x, len(table))
                out.append(c)
        return "".join(out)


def _unit_code(x, index: int) -> str:
    """A unit's character: a pitch in 0..0xFFFF itself, else 0x10000 + ``index`` (the size of
    the table the caller stores it in, so every stored unit has its own)."""
    if type(x) is not tuple:
        try:
            i = int(x)
            if i == x and 0 <= i < 0x10000:  # a pitch given as another number type
                return chr(i)
        except (TypeError, ValueError, OverflowError):
            pass
    return chr(0x10000 + index)


def _views(piece: Piece) -> list[_VoiceView]:
    return [_VoiceView(v, piece.tpq or TPQ) for v in piece.voices if v.notes]


def _codes(a: list, b: list, table: dict) -> tuple[str, str]:
    """Both unit sequences as strings of one character per distinct chord/pitch."""
    get = table.setdefault
    sa = "".join([chr(get(u, len(table))) for u in a])
    sb = "".join([chr(get(u, len(table))) for u in b])
    return sa, sb


def voice_pitch_loss(ref_units: Sequence, pred_units: Sequence, _table: dict | None = None) -> float:
    """Levenshtein distance between two sequences of chords/pitches (each chord one unit),
    divided by the longer length; 0 when both are empty."""
    n = max(len(ref_units), len(pred_units))
    if n == 0:
        return 0.0
    sa, sb = _codes(list(ref_units), list(pred_units), {} if _table is None else _table)
    return Levenshtein.distance(sa, sb) / n


def voice_instrument_loss(ref_program: int, pred_program: int, ref_drum: bool = False,
                          pred_drum: bool = False) -> float:
    """0 for the same GM program (or both drums), FAMILY_LOSS within a GM family, else
    OTHER_FAMILY_LOSS plus the rest graded by how different the GM names are."""
    key = (ref_program, pred_program, ref_drum, pred_drum)
    try:
        return _INSTRUMENT_LOSSES[key]
    except (KeyError, TypeError):
        pass
    loss = _instrument_loss(ref_program, pred_program, ref_drum, pred_drum)
    if len(_INSTRUMENT_LOSSES) > 65536:
        _INSTRUMENT_LOSSES.clear()
    try:
        _INSTRUMENT_LOSSES[key] = loss
    except TypeError:  # an unhashable argument
        pass
    return loss


_INSTRUMENT_LOSSES: dict[tuple, float] = {}


def _instrument_loss(ref_program, pred_program, ref_drum, pred_drum) -> float:
    if ref_drum or pred_drum:
        if ref_drum and pred_drum:
            return 0.0
        a, b = gm.program_name(ref_program, ref_drum), gm.program_name(pred_program, pred_drum)
    else:
        if ref_program == pred_program:
            return 0.0
        if gm.family(ref_program) == gm.family(pred_program):
            return FAMILY_LOSS
        a, b = gm.program_name(ref_program), gm.program_name(pred_program)
    sim = Levenshtein.ratio(a.lower(), b.lower())
    return OTHER_FAMILY_LOSS + (1.0 - OTHER_FAMILY_LOSS) * (1.0 - sim)


def voice_rhythm_loss(ref_onsets: Sequence[float], pred_onsets: Sequence[float],
                      tolerance: float = RHYTHM_TOLERANCE_BEATS * TPQ) -> float:
    """1 - F1 of onsets (sorted, in ticks) matched one-to-one within ``tolerance``; 0 when
    both are empty."""
    if not ref_onsets and not pred_onsets:
        return 0.0
    if not ref_onsets or not pred_onsets:
        return 1.0
    if ref_onsets == pred_onsets:
        return 0.0
    hits = _match_sorted(ref_onsets, pred_onsets, tolerance)
    return 1.0 - 2.0 * hits / (len(ref_onsets) + len(pred_onsets))


def _match_sorted(a: Sequence[float], b: Sequence[float], tol: float) -> int:
    """Size of a maximum one-to-one matching of two sorted lists of points, pairs within tol.
    Greedy from the left is optimal for points on a line."""
    if not a or not b:
        return 0
    hits = 0
    ntol = -tol
    ib = iter(b)
    y = next(ib)
    try:
        for x in a:
            d = x - y
            while d > tol:  # y is too early for x and for every later point of a
                y = next(ib)
                d = x - y
            if d < ntol:  # x is too early for y and for every later point of b
                continue
            hits += 1  # within tol: a pair
            y = next(ib)
    except StopIteration:
        pass
    return hits


# ---- voice assignment -------------------------------------------------------------------


def assign(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Row->column pairs minimising the total of a rectangular cost matrix (each row and each
    column used at most once, min(rows, cols) pairs). Small matrices try every permutation;
    larger ones use scipy.optimize.linear_sum_assignment."""
    nr = len(cost)
    nc = len(cost[0]) if nr else 0
    if nr == 0 or nc == 0:
        return []
    if nr == 1:
        j = min(range(nc), key=cost[0].__getitem__)
        return [(0, j)]
    if nc == 1:
        i = min(range(nr), key=lambda r: cost[r][0])
        return [(i, 0)]
    if max(nr, nc) <= _BRUTE_FORCE_VOICES:
        if nr <= nc:
            best = min(itertools.permutations(range(nc), nr),
                       key=lambda p: sum(cost[i][p[i]] for i in range(nr)))
            return [(i, best[i]) for i in range(nr)]
        best = min(itertools.permutations(range(nr), nc),
                   key=lambda p: sum(cost[p[j]][j] for j in range(nc)))
        return sorted((best[j], j) for j in range(nc))
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(cost, dtype=float))
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def _clear_assignment(pitch: list[list[float]]) -> list[tuple[int, int]] | None:
    """What ``assign`` returns for any cost ``pitch[i][j] + _TIE_BREAK * (x + y)`` with x and y
    in [0, 1] (instrument and rhythm), when pitch alone decides: along the shorter side, each
    row (column) has its own best column (row), ahead of every other by more than all the
    tie-breaks together could make up. None when that is not so (then costs must be built)."""
    nr, nc = len(pitch), len(pitch[0])
    # a pair's tie-break is at most 2 * _TIE_BREAK (float rounding is far below the slack)
    margin = (2 * min(nr, nc) + 1) * _TIE_BREAK
    # each voice of the smaller side picks its cheapest partner on the other side
    rows = pitch if nr <= nc else list(zip(*pitch))
    pairs = []
    used = set()
    for i, row in enumerate(rows):
        j = min(range(len(row)), key=row.__getitem__)
        best = row[j] + margin
        for jj, x in enumerate(row):
            if x <= best and jj != j:
                return None
        if j in used:
            return None
        used.add(j)
        pairs.append((i, j))
    return pairs if nr <= nc else sorted((i, j) for j, i in pairs)


def _voice_losses(ref: list[_VoiceView], pred: list[_VoiceView]) -> tuple[float, float, float]:
    """(pitch, instrument, rhythm) over voices matched by minimal pitch distance; a missing or
    extra voice costs 1 in each; averaged over max(#ref voices, #pred voices)."""
    n = max(len(ref), len(pred))
    if n == 0:
        return 0.0, 0.0, 0.0
    if not ref or not pred:
        return 1.0, 1.0, 1.0
    pairs, pitch, instr, rhythm = _match_voices(ref, pred)
    tol = RHYTHM_TOLERANCE_BEATS * TPQ
    unmatched = float(n - len(pairs))
    sp = si = sr = unmatched
    for i, j in pairs:
        sp += pitch[i][j]
        si += instr[i][j]
        rl = rhythm.get((i, j))
        sr += voice_rhythm_loss(ref[i].onsets, pred[j].onsets, tol) if rl is None else rl
    return sp / n, si / n, sr / n


def _match_voices(ref: list[_VoiceView], pred: list[_VoiceView]):
    """The (ref, pred) voice index pairs the losses compare (minimal pitch distance, instrument
    and rhythm breaking ties), with the pitch and instrument loss matrices and the rhythm losses
    computed on the way."""
    # each distinct chord/pitch of this pair becomes one character, so the C Levenshtein runs
    # on plain strings; each voice is encoded once
    table: dict = {}
    rs = [v.code(table) for v in ref]
    ps = [v.code(table) for v in pred]
    dist = Levenshtein.distance
    pitch = [[dist(a, b) / (max(len(a), len(b)) or 1) for b in ps] for a in rs]
    instr = [[voice_instrument_loss(r.program, p.program, r.drum, p.drum) for p in pred]
             for r in ref]
    tol = RHYTHM_TOLERANCE_BEATS * TPQ
    rhythm: dict[tuple[int, int], float] = {}
    pairs = _clear_assignment(pitch)
    if pairs is None:
        # rhythm breaks ties only where two candidates have the same pitch distance (rare);
        # else it is needed for the matched voices alone
        tied = any(len(set(row)) < len(row) for row in pitch) or (
            len(ref) > 1 and any(len({row[j] for row in pitch}) < len(ref)
                                 for j in range(len(pred))))
        if tied:
            for i, r in enumerate(ref):
                for j, p in enumerate(pred):
                    rhythm[i, j] = voice_rhythm_loss(r.onsets, p.onsets, tol)
        cost = [[pitch[i][j] + _TIE_BREAK * (instr[i][j] + rhythm.get((i, j), 0.0))
                 for j in range(len(pred))] for i in range(len(ref))]
        pairs = assign(cost)
    return pairs, pitch, instr, rhythm


def family_matches(ref: Piece, pred: Piece | None) -> tuple[int, int]:
    """(right, voices): of the reference's voices, how many are matched (as the pitch and
    instrument losses match them) with a predicted voice of the same GM family (drums with
    drums). An unreadable prediction gets none right."""
    rv = _views(ref)
    pv = _views(pred) if pred is not None else []
    if not rv or not pv:
        return 0, len(rv)
    pairs = _match_voices(rv, pv)[0]
    right = sum(1 for i, j in pairs
                if gm.voice_family(rv[i].program, rv[i].drum) == gm.voice_family(pv[j].program, pv[j].drum))
    return right, len(rv)


def pitch_loss(ref: Piece, pred: Piece) -> float:
    """The seed's pitch loss between two pieces (see module docstring)."""
    return _voice_losses(_views(ref), _views(pred))[0]


def instrument_loss(ref: Piece, pred: Piece) -> float:
    """Instrument loss over voices matched as for pitch."""
    return _voice_losses(_views(ref), _views(pred))[1]


def rhythm_loss(ref: Piece, pred: Piece) -> float:
    """Onset-position loss over voices matched as for pitch."""
    return _voice_losses(_views(ref), _views(pred))[2]


# ---- note-level transcription metrics ---------------------------------------------------


def note_events(piece: Piece) -> list[tuple[int, float, float]]:
    """All notes of all voices as (pitch, onset seconds, offset seconds) through the tempo map."""
    tpq = piece.tpq or TPQ
    tempos = sorted(piece.tempos or [], key=lambda t: t.tick)
    ticks, secs, rates = [0], [0.0], []
    bpm0 = tempos[0].bpm if tempos else 120.0
    rates.append(60.0 / (_safe_bpm(bpm0) * tpq))
    for t in tempos:
        if t.tick <= 0:
            rates[0] = 60.0 / (_safe_bpm(t.bpm) * tpq)
            continue
        secs.append(secs[-1] + (t.tick - ticks[-1]) * rates[-1])
        ticks.append(t.tick)
        rates.append(60.0 / (_safe_bpm(t.bpm) * tpq))

    def sec(tick: int) -> float:
        i = bisect.bisect_right(ticks, tick) - 1 if len(ticks) > 1 else 0
        return secs[i] + (tick - ticks[i]) * rates[i]

    if len(ticks) == 1:  # one tempo: a plain scale
        k = rates[0]
        return [(n.pitch, n.start * k, (n.start + max(n.duration, 0)) * k)
                for v in piece.voices for n in v.notes]
    return [(n.pitch, sec(n.start), sec(n.start + max(n.duration, 0)))
            for v in piece.voices for n in v.notes]


def _safe_bpm(bpm: float) -> float:
    return bpm if isinstance(bpm, (int, float)) and math.isfinite(bpm) and bpm > 0 else 120.0


def note_matches(ref: list[tuple[int, float, float]], est: list[tuple[int, float, float]],
                 onset_tolerance: float = ONSET_TOLERANCE, offset_ratio: float | None = None,
                 offset_min_tolerance: float = OFFSET_MIN_TOLERANCE) -> int:
    """Size of the maximum one-to-one matching between reference and estimated notes with the
    same pitch, onsets within ``onset_tolerance`` seconds and (when ``offset_ratio`` is given)
    offsets within max(offset_min_tolerance, offset_ratio * reference duration), as mir_eval's
    ``match_notes`` (distances rounded to 4 decimals, inclusive comparisons)."""
    return _note_matches(_by_pitch(ref), _by_pitch(est), onset_tolerance, offset_ratio,
                         offset_min_tolerance)


def _by_pitch(notes) -> dict[int, list[tuple[float, float]]]:
    """(onset, offset) pairs per pitch, sorted."""
    out: dict[int, list[tuple[float, float]]] = {}
    for p, on, off in notes:
        g = out.get(p)
        if g is None:
            out[p] = [(on, off)]
        else:
            g.append((on, off))
    for g in out.values():
        g.sort()
    return out


def _note_matches(ref_by_pitch, est_by_pitch, onset_tolerance, offset_ratio,
                  offset_min_tolerance) -> int:
    total = 0
    for p, rs in ref_by_pitch.items():
        es = est_by_pitch.get(p)
        if not es:
            continue
        if offset_ratio is None:
            total += _match_sorted_rounded([r[0] for r in rs], [e[0] for e in es], onset_tolerance)
        else:
            total += _match_bipartite(rs, es, onset_tolerance, offset_ratio, offset_min_tolerance)
    return total


def _match_sorted_rounded(a: list[float], b: list[float], tol: float) -> int:
    i = j = hits = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        d = round(a[i] - b[j], _DECIMALS)
        if d > tol:
            j += 1
        elif d < -tol:
            i += 1
        else:
            hits += 1
            i += 1
            j += 1
    return hits


def _match_bipartite(rs, es, tol, ratio, min_tol) -> int:
    """Maximum bipartite matching (augmenting paths) under onset and offset tolerances."""
    est_on = [e[0] for e in es]
    adj: list[list[int]] = []
    for on, off in rs:
        otol = max(min_tol, ratio * (off - on))
        lo = bisect.bisect_left(est_on, on - tol - 1e-3)
        hi = bisect.bisect_right(est_on, on + tol + 1e-3)
        adj.append([j for j in range(lo, hi)
                    if round(abs(on - es[j][0]), _DECIMALS) <= tol and round(abs(off - es[j][1]), _DECIMALS) <= otol])
    match_est: dict[int, int] = {}
    hits = 0
    for root in range(len(rs)):
        if not adj[root]:
            continue
        # iterative depth-first search for an augmenting path from ``root``
        seen: set[int] = set()
        stack = [(root, iter(adj[root]))]
        via: list[int] = []  # est chosen at each level of the stack
        found = False
        while stack and not found:
            i, it = stack[-1]
            for j in it:
                if j in seen:
                    continue
                seen.add(j)
                if j not in match_est:
                    via.append(j)
                    found = True
                else:
                    via.append(j)
                    k = match_est[j]
                    stack.append((k, iter(adj[k])))
                break
            else:
                stack.pop()
                if via:
                    via.pop()
        if found:
            for (i, _), j in zip(stack, via):
                match_est[j] = i
            hits += 1
    return hits


def note_metrics(ref: Piece, pred: Piece) -> dict[str, float]:
    """note_precision, note_recall, note_f1 (onsets) and note_f1_offset. Two pieces with no
    notes agree perfectly (1.0); one side empty is 0.0 (mir_eval returns 0 for both)."""
    r, e = note_events(ref), note_events(pred)
    if not r and not e:
        return {"note_f1": 1.0, "note_precision": 1.0, "note_recall": 1.0, "note_f1_offset": 1.0}
    if not r or not e:
        return {"note_f1": 0.0, "note_precision": 0.0, "note_recall": 0.0, "note_f1_offset": 0.0}
    rp, ep = _by_pitch(r), _by_pitch(e)
    m = _note_matches(rp, ep, ONSET_TOLERANCE, None, OFFSET_MIN_TOLERANCE)
    mo = _note_matches(rp, ep, ONSET_TOLERANCE, OFFSET_RATIO, OFFSET_MIN_TOLERANCE)
    p, rc = m / len(e), m / len(r)
    return {
        "note_f1": _f1(p, rc), "note_precision": p, "note_recall": rc,
        "note_f1_offset": _f1(mo / len(e), mo / len(r)),
    }


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


# ---- the reward ------------------------------------------------------------------------


def _unit(x: float) -> float:
    """Clamp to [0, 1]; NaN counts as the worst loss."""
    if x != x:  # NaN
        return 1.0
    return 0.0 if x < 0 else 1.0 if x > 1 else float(x)


def score_pieces(ref: Piece, pred: Piece | None, weights: dict | None = None,
                 note_metrics: bool = True, parse_warnings: int = 0,
                 missing: Iterable[str] = ()) -> Score:
    """Score a predicted piece against a reference. ``pred=None`` (or a piece with no notes)
    is an unreadable prediction: reward 0, every loss 1, note metrics 0. ``missing`` names
    components the prediction did not state ("tempo", "metre"): their loss is 1 rather than
    a comparison against the reader's default."""
    w = check_weights(weights)
    want_notes = note_metrics or w["note_f1"] > 0
    if pred is None or pred.note_count == 0:
        s = Score(reward=0.0, loss=1.0, pitch=1.0, metre=1.0, tempo=1.0, instrument=1.0,
                  rhythm=1.0, parse_warnings=parse_warnings)
        if want_notes:
            s.note_f1 = s.note_precision = s.note_recall = s.note_f1_offset = 0.0
        return s
    comps = {
        "tempo": 1.0 if "tempo" in missing else _unit(tempo_loss(ref.bpm, pred.bpm)),
        "metre": 1.0 if "metre" in missing else _unit(metre_loss(ref.meter, pred.meter)),
    }
    pl, il, rl = _voice_losses(_views(ref), _views(pred))
    comps.update(pitch=_unit(pl), instrument=_unit(il), rhythm=_unit(rl))
    notes = None
    if want_notes:
        notes = {k: 1.0 - _unit(1.0 - v) for k, v in note_metrics_fn(ref, pred).items()}
        comps["note_f1"] = 1.0 - notes["note_f1"]
    total = sum(w.values())
    loss = _unit(sum(w[k] * comps[k] for k in WEIGHT_NAMES if w[k]) / total)
    s = Score(reward=1.0 - loss, loss=loss, pitch=comps["pitch"], metre=comps["metre"],
              tempo=comps["tempo"], instrument=comps["instrument"], rhythm=comps["rhythm"],
              parse_warnings=parse_warnings)
    if notes is not None:
        s.note_f1, s.note_precision = notes["note_f1"], notes["note_precision"]
        s.note_recall, s.note_f1_offset = notes["note_recall"], notes["note_f1_offset"]
    return s


note_metrics_fn = note_metrics  # score_pieces' parameter shadows the function's name


# an ABC header field line (X:, T:, M:, ...), and the fields whose absence costs a component
_FIELD = re.compile(r"^[ \t]*[A-Za-z]:", re.M)
_STATED = {"metre": re.compile(r"^[ \t]*M:|\[M:", re.M), "tempo": re.compile(r"^[ \t]*Q:|\[Q:", re.M)}


def _stated(text: str) -> frozenset[str]:
    return frozenset(k for k, rx in _STATED.items() if rx.search(text))


def read_reference(ref_abc: str) -> Piece:
    """The reference's first tune; UserError when it cannot be read or has no notes. The last
    few references read are cached (PPO scores several samples per reference); callers must
    not modify the returned piece."""
    return _read_reference(ref_abc)[0]


def _read_reference(ref_abc: str) -> tuple[Piece, frozenset[str]]:
    if not isinstance(ref_abc, str):
        raise UserError(f"reference must be ABC text, not {type(ref_abc).__name__}")
    return _read_reference_cached(ref_abc)


@functools.lru_cache(maxsize=256)
def _read_reference_cached(ref_abc: str) -> tuple[Piece, frozenset[str]]:
    from abcscribe.core.abc import extract_abc, read_abc

    try:
        text = extract_abc(ref_abc)
        piece, _warnings = read_abc(text)
    except UserError as e:
        raise UserError(f"reference ABC cannot be read: {e}") from None
    except Exception as e:  # the reader should not raise, but the reference is the user's data
        raise UserError(f"reference ABC cannot be read ({type(e).__name__}: {e})") from None
    if not _FIELD.search(text):
        raise UserError("reference is not ABC: no header field (X:, M:, K:, ...)")
    if piece.note_count == 0:
        raise UserError("reference ABC has no notes")
    return piece, _stated(text)


def read_prediction(pred_abc: str) -> tuple[Piece | None, int, frozenset[str]]:
    """The prediction's first tune (None when unreadable: no header field or no notes), its
    count of reader warnings, and which of metre/tempo it states. Never raises: a model's
    output may be anything."""
    from abcscribe.core.abc import extract_abc, read_abc

    try:
        if not isinstance(pred_abc, str):
            return None, 1, frozenset()
        text = extract_abc(pred_abc)
        if not _FIELD.search(text):  # prose or note-like garbage, not an ABC tune
            return None, 1, frozenset()
        piece, warnings = read_abc(text)
        return (piece if piece.note_count else None), len(warnings), _stated(text)
    except Exception:
        return None, 1, frozenset()


def _score_texts(ref_abc: str, pred_abc: str, weights: dict | None, note_metrics: bool) -> Score:
    ref, ref_stated = _read_reference(ref_abc)
    pred, nwarn, pred_stated = read_prediction(pred_abc)
    return score_pieces(ref, pred, weights, note_metrics, parse_warnings=nwarn,
                        missing=ref_stated - pred_stated)


def score(ref_abc: str, pred_abc: str, weights: dict | None = None,
          note_metrics: bool = True) -> Score:
    """Score predicted ABC text against reference ABC text (both may sit in prose or ```
    fences). UserError when the reference cannot be read; never raises on the prediction.
    A prediction with no header field or no notes scores 0; one that leaves out the M: or Q:
    the reference states gets metre or tempo loss 1."""
    return _score_texts(ref_abc, pred_abc, weights, note_metrics)


def score_many(pairs: Iterable[tuple[str, str]], weights: dict | None = None,
               note_metrics: bool = False) -> list[Score]:
    """Score (ref_abc, pred_abc) pairs (a PPO batch): the same results as :func:`score` on each
    pair, with the weights checked once; references are read once each through the cache."""
    w = check_weights(weights)
    return [_score_texts(r, p, w, note_metrics) for r, p in pairs]


# ---- summaries over many pairs ----------------------------------------------------------


def summarize(records: Iterable[dict], metrics: Sequence[str] = METRICS, resamples: int = 1000,
              seed: int = 0) -> dict[str, dict]:
    """Per metric over the records that have it (numbers, not None): n, mean, median and a 95%
    percentile-bootstrap interval of the mean (``resamples`` draws, fixed ``seed``)."""
    import numpy as np

    records = list(records)
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for m in metrics:
        vals = np.array([float(r[m]) for r in records
                         if isinstance(r.get(m), (int, float)) and not isinstance(r.get(m), bool)])
        if vals.size == 0:
            continue
        if vals.size > 1 and resamples > 0:
            idx = rng.integers(0, vals.size, size=(resamples, vals.size))
            means = vals[idx].mean(axis=1)
            lo, hi = np.percentile(means, [2.5, 97.5])
        else:
            lo = hi = vals.mean()
        out[m] = {"n": int(vals.size), "mean": float(vals.mean()), "median": float(np.median(vals)),
                  "ci95": [float(lo), float(hi)]}
    return out
