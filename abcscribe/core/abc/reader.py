"""ABC text -> Piece: a tolerant ABC 2.1 reader that never raises on a malformed body; it
returns what it could read plus a list of warnings."""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from dataclasses import fields as _dataclass_fields
from itertools import chain
from operator import add, attrgetter

from abcscribe.core.abc.keys import _ACC_VALUE, _LETTER_INDEX, _LETTER_PC, parse_key
from abcscribe.core.errors import UserError
from abcscribe.core.gm import program_number
from abcscribe.core.notes import Key, Meter, Note, Piece, Tempo, Voice


# ---- reader --------------------------------------------------------------------------------

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
# Token kinds: the number of the _TOKEN group that names a token's alternative (a match's
# ``lastindex``), so a kind is read straight off the match. _token_info marks a token that the
# fast path of _TuneReader.music must leave to the general code (_TuneReader._token) as
# kind + GENERAL.
NOTE, SKIP, FIELD, ENDING, BAR, CHORD, CHORD_OPEN = 2, 3, 4, 5, 6, 8, 9
CHORD_CLOSE, TIE, REST, MULTI_REST, TUPLET, BROKEN = 11, 12, 14, 16, 17, 20
SKIPPED_GROUP, OVERLAY, UNKNOWN = 21, 22, 23
GENERAL = 100

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
    is the kind:
    (NOTE, accidental, letter index, (letter, octave), pitch, ticks, (num, den, pitch text)),
    (SKIP,), (FIELD, text) inline field, (ENDING, numbers),
    (BAR, bar sign, ending numbers or None, repeat sign or ending, text),
    (CHORD, _pitch_info of each note, their texts, ticks, length text, (letter, octave) of
    each) a chord of plain notes, (CHORD_OPEN,), (CHORD_CLOSE, length text), (TIE,),
    (REST, ticks, length text), (MULTI_REST, bars text), (TUPLET, p, q, r texts),
    (BROKEN, text) broken rhythm, (OVERLAY,) voice overlay, (UNKNOWN, character). Ticks are for ``unit`` outside tuplets and
    broken rhythms. A note, plain chord, rest or bar line whose reading raises an exception
    (a garbage length or ending number) is kind + GENERAL: the general code reads it again and
    raises at the point where it always did; so is a note or chord of no length or with a
    pitch (before its accidental) outside _SAFE_LOW.._SAFE_HIGH. Cached in ``cache`` (the
    unit's)."""
    m = _TOKEN.match(tok)
    k = m.lastindex
    if k == NOTE:
        n, d = _length_of(m[2])  # raises before any state changes, as it always did
        try:
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur = 0
        acc, li, lo, base = _pitch_info(m[1])
        # zero length or an error (the general code warns or raises), or a pitch that with an
        # accidental (-2..2) could leave 0..127 (the general code checks): the general way
        if dur <= 0 or not _SAFE_LOW <= base <= _SAFE_HIGH:
            k = NOTE + GENERAL
        info = (k, acc, li, lo, base, dur, (n, d, m[1]))
    elif k == SKIP or k == SKIPPED_GROUP:
        info = (SKIP,)
    elif k == FIELD:
        info = (FIELD, m[4])
    elif k == ENDING:
        info = (ENDING, m[5][1:])
    elif k == BAR:
        try:
            text, ending = _BAR_CACHE.get(m[6]) or _bar_parts(m[6])
            info = (BAR, text, ending, ":" in text or text == "[" or ending is not None, m[6])
        except Exception:
            info = (BAR + GENERAL, None, None, None, m[6])
    elif k == CHORD:
        pitches, texts = _CHORD_CACHE.get(m[7]) or _chord_info(m[7])
        try:
            n, d = _length_of(m[8])
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur, k = 0, CHORD + GENERAL
        if not all(_SAFE_LOW <= x[3] <= _SAFE_HIGH for x in pitches):
            k = CHORD + GENERAL
        info = (k, pitches, texts, dur, m[8], tuple(x[2] for x in pitches))
    elif k == REST:
        n, d = _length_of(m[14])  # raises before any state changes, as it always did
        try:
            dur = _plain_duration(unit, n, d)
        except Exception:
            dur, k = 0, REST + GENERAL
        info = (k, dur, m[14])
    elif k == TUPLET or k == TUPLET + 1 or k == TUPLET + 2:  # (p, (p:q or (p:q:r
        info = (TUPLET, m[17], m[18], m[19])
    elif k in (CHORD_OPEN, TIE, OVERLAY):
        info = (k,)
    else:  # CHORD_CLOSE, MULTI_REST, BROKEN, UNKNOWN
        info = (k, m[k])
    if len(cache) > 4096:
        cache.clear()
    cache[tok] = info
    return info


@functools.lru_cache(maxsize=1024)
def _parse_key_value(text: str) -> tuple:
    """parse_key with the signature as a tuple (copy it to a list before changing it)."""
    key, sig, ok = parse_key(text)
    return key, tuple(sig), ok


@functools.lru_cache(maxsize=1024)
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


@functools.lru_cache(maxsize=1024)
def _parse_unit_field(text: str) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\s*/\s*(\d+)", text)
    if not m:
        m1 = re.match(r"\s*1\s*$", text)
        return (1, 1) if m1 else None
    a, b = int(m.group(1)), int(m.group(2))
    if a <= 0 or b <= 0 or b > 512:
        return None
    return a, b


@functools.lru_cache(maxsize=1024)
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


@functools.lru_cache(maxsize=1024)
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


@functools.lru_cache(maxsize=1024)
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


def _hot_state(vs: "_VoiceState", prop_pitch: bool, fast: bool = True) -> tuple:
    """The voice state that ``_TuneReader.music`` keeps in local variables while it reads, and
    whether its fast path applies (``plain``)."""
    sig = vs.sig
    plain = (fast and prop_pitch and not vs.in_chord and vs.tuplet is None and vs.broken is None
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
    def __init__(self, lines: list[str], repeats: bool = True, fast: bool = True):
        self.lines = lines
        self.expand = repeats
        self.fast = fast  # False: every token through the general code (the differential test)
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
         plain) = _hot_state(vs, prop_pitch, self.fast)
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
                    if k == NOTE:  # a note
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
                    if k == SKIP:  # spaces, slurs, decorations, chord symbols, ...
                        continue
                    if k == BAR:  # a bar line
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
                    if k == CHORD:  # a chord of plain notes: what "[", the notes and "]" do
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
                    if k == TIE:  # a tie
                        if lx is not None:
                            if type(lx) is Note:
                                ties[lx.pitch] = lx
                                tie_letters[llo] = lx.pitch
                            else:
                                for x, lo in zip(lx, llo):
                                    ties[x.pitch] = x
                                    tie_letters[lo] = x.pitch
                        continue
                    if k == REST:  # a rest
                        dur = info[1]
                        if ties:
                            ties = {}
                        if tie_letters:
                            tie_letters = {}
                        lx, lt0, ld, llo = (), t, dur, ()
                        t += dur
                        used = True
                        continue
                elif k == SKIP:
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
                 plain) = _hot_state(vs, prop_pitch, self.fast)
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
        if k == NOTE or k == NOTE + GENERAL:
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
        elif k == BAR or k == BAR + GENERAL:
            self.bar(vs, info[4])
        elif k == CHORD or k == CHORD + GENERAL:  # a chord of plain notes: what "[", the notes and "]" do
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
        elif k == CHORD_OPEN:
            vs.in_chord = True
            vs.chord = []
        elif k == CHORD_CLOSE:
            self.chord_close(vs, info[1])
        elif k == TIE:
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
        elif k == REST or k == REST + GENERAL:
            self.rest(vs, info[2])
        elif k == FIELD:
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
        elif k == TUPLET:
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
        elif k == BROKEN:
            self.broken(vs, info[1])
        elif k == ENDING:
            self.ending(vs, info[1])
        elif k == MULTI_REST:
            self.multi_rest(vs, info[1])
        elif k == OVERLAY:
            vs.bar_max = max(vs.bar_max, vs.t)
            vs.t = vs.bar_start
            vs.last = None
        elif k == UNKNOWN:
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
