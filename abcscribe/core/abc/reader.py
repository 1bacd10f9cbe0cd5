"""ABC text -> Piece: a tolerant ABC 2.1 reader that never raises on a malformed body; it
returns what it could read plus a list of warnings."""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from itertools import chain
from operator import attrgetter

from abcscribe.core.abc.keys import _ACC_VALUE, _LETTER_INDEX, _LETTER_PC, parse_key
from abcscribe.core.errors import UserError
from abcscribe.core.gm import program_number
from abcscribe.core.notes import Key, Meter, Note, Piece, Tempo, Voice


# ---- tokens --------------------------------------------------------------------------------

# Token kinds: the names of _TOKEN's alternatives (a match's ``lastgroup``).
NOTE, SKIP, FIELD, ENDING, BAR, CHORD, CHORD_OPEN = (
    "note", "skip", "field", "ending", "bar", "chord", "chord_open")
CHORD_CLOSE, TIE, REST, MULTI_REST, TUPLET, BROKEN = (
    "chord_close", "tie", "rest", "multi_rest", "tuplet", "broken")
DECORATION, OVERLAY, UNKNOWN = "decoration", "overlay", "unknown"

_TOKEN = re.compile(
    r"""
    (?P<note>(?P<pitch>(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*)(?P<length>\d*/*\d*)\ *)
  | (?P<skip>\((?!\d)|[\s).~HLMOPSTuvy`$*#;?@'\\]+)                   # slurs, spaces
  | (?P<field>\[[A-Za-z]:[^\]\n]*\])                                  # inline field
  | (?P<ending>\[\d+(?:[,-]\d+)*)                                     # "[1" "[1,3"
  | (?P<bar>(?::+\|*[\]\[]?:*|\[?\|+\]?:*)(?:\d+(?:[,-]\d+)*)?)\ *   # maybe with an ending
  | (?P<chord>\[(?P<chord_notes>(?:(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*)+)\]
     (?P<chord_length>\d*/*\d*))\ *                          # plain notes
  | (?P<chord_open>\[)
  | (?P<chord_close>\](?P<close_length>\d*/*\d*))\ *
  | (?P<tie>-)\ *
  | (?P<rest>[zx](?P<rest_length>\d*/*\d*))\ *
  | (?P<multi_rest>[ZX](?P<bars>\d*))
  | (?P<tuplet>\((?P<p>\d+)(?::(?P<q>\d*))?(?::(?P<r>\d*))?)          # (p:q:r
  | (?P<broken>[<>]+)
  | (?P<decoration>"[^"\n]*"?|![^!\n]*!|\+[^+\s]*\+|\{[^}]*\}?)       # and chord symbols, graces
  | (?P<overlay>&)
  | (?P<unknown>.)
    """,
    re.X,
)
# Alternatives that start with the same character keep their order (inline field, ending, bar,
# plain chord, chord open), the others are ordered by frequency. Each alternative is one named
# group, so a match's ``lastgroup`` is its kind. Spaces after a note, bar, chord, tie or rest are
# taken with it (spaces are skipped anyway).

# The same tokens as _TOKEN as plain strings: findall on a pattern without groups is the
# cheapest way to cut a line, and _token_info classifies each distinct token text once with
# _TOKEN. The alternatives are _TOKEN's in the same order, with nested alternatives and
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

_CHORD_NOTE = re.compile(r"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*")
_LENGTH = re.compile(r"(\d*)(/*)(\d*)")
_FIELD_LINE = re.compile(r"^([A-Za-z+]):(.*)$")
_NOTE_ORDER = attrgetter("start", "pitch", "duration")


@functools.lru_cache(maxsize=4096)
def _length_of(text: str) -> tuple[int, int]:
    """(num, den) of a note-length text such as ``3/2`` or ``//``."""
    num, slashes, den = _LENGTH.fullmatch(text).groups()
    n = int(num) if num else 1
    if not slashes:
        return n, 1
    if den:
        return n, int(den) * (2 ** (len(slashes) - 1))
    return n, 2 ** len(slashes)


@functools.lru_cache(maxsize=4096)
def _pitch_info(text: str) -> tuple:
    """(written accidental or None, letter index, (letter, octave), pitch without accidental)
    of a note's pitch text such as ``^f'``."""
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
    return acc, li, (li, octave), 12 * (octave + 1) + _LETTER_PC[li]


def _ticks(n: int, d: int) -> int:
    """Whole ticks of ``n/d`` ticks (at least one when positive)."""
    if n <= 0:
        return 0
    return n // d if n % d == 0 else max(1, round(n / d))


def _plain_ticks(unit: int, length: tuple[int, int]) -> int | None:
    """Ticks of a length (num, den) of the unit outside tuplets and broken rhythms; None
    when it has none (a zero denominator: the reader stops where it works the length out)."""
    n, d = length
    return _ticks(unit * n, d) if d else None


class _TokenTable(dict):
    """_token_info of each token text for one unit length, worked out on first use (a dict
    lookup per token: an lru_cache call costs as much again as the rest of reading a note)."""

    def __init__(self, unit: int):
        super().__init__()
        self.unit = unit

    def __missing__(self, tok: str) -> tuple:
        if len(self) >= 4096:  # (texts from a language model can hold any garbage)
            self.clear()
        info = self[tok] = _token_info(tok, self.unit)
        return info


@functools.lru_cache(maxsize=64)
def _token_table(unit: int) -> _TokenTable:
    """The token table for ``unit`` ticks of L."""
    return _TokenTable(unit)


def _token_info(tok: str, unit: int) -> tuple:
    """What the reader needs of one token (a match of _TOKENS), as a tuple whose first item
    is the kind:
    (NOTE, (_pitch_info of the note,), ((letter, octave),), (num, den) of its length, its
    ticks), (CHORD, _pitch_info of each note, (letter, octave) of each, (num, den), ticks) a
    chord of plain notes,
    (REST, (num, den), ticks), (BAR, bar sign, ending numbers or None), (FIELD, text) inline field, (ENDING, numbers),
    (CHORD_OPEN,), (CHORD_CLOSE, (num, den)), (TIE,), (MULTI_REST, bars text),
    (TUPLET, p, q, r texts), (BROKEN, text), (OVERLAY,), (SKIP,) for spaces, slurs,
    decorations, chord symbols and grace notes, (UNKNOWN, character). Ticks (_plain_ticks)
    are for ``unit`` ticks of L."""
    m = _TOKEN.match(tok)
    k = m.lastgroup
    if k == NOTE:
        length = _length_of(m["length"])
        pitch = _pitch_info(m["pitch"])
        return NOTE, (pitch,), (pitch[2],), length, _plain_ticks(unit, length)
    if k == SKIP or k == DECORATION:
        return (SKIP,)
    if k == BAR:
        return (BAR, *_bar_parts(m[k]))
    if k == CHORD:
        notes = _CHORD_NOTE.findall(m["chord_notes"])
        length = _length_of(m["chord_length"])
        pitches = tuple(map(_pitch_info, notes))
        return (CHORD, pitches, tuple(x[2] for x in pitches), length,
                _plain_ticks(unit, length))
    if k == REST:
        length = _length_of(m["rest_length"])
        return REST, length, _plain_ticks(unit, length)
    if k == TUPLET:
        return TUPLET, m["p"], m["q"], m["r"]
    if k == ENDING:
        return ENDING, m[k][1:]
    if k == CHORD_CLOSE:
        return CHORD_CLOSE, _length_of(m["close_length"])
    if k == MULTI_REST:
        return MULTI_REST, m["bars"]
    if k == FIELD or k == BROKEN or k == UNKNOWN:
        return k, m[k]
    return (k,)  # CHORD_OPEN, TIE, OVERLAY


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


def _hot_state(vs: "_VoiceState") -> tuple:
    """The voice's state that ``_TuneReader.music`` keeps in local variables."""
    return vs.t, vs.ties, vs.tie_letters, vs.bar_acc, vs.last, vs.sig, vs.unit, vs.voice.notes


def _keep_hot_state(vs: "_VoiceState", t, ties, tie_letters, bar_acc, last) -> None:
    """``_TuneReader.music``'s local copies written back to the voice."""
    vs.t = t
    vs.ties = ties
    vs.tie_letters = tie_letters
    vs.bar_acc = bar_acc
    vs.last = last


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
        # notes tied on from the last note or chord, by pitch and by (letter, octave); None
        # when there are none
        self.ties: dict[int, Note] | None = None
        self.tie_letters: dict[tuple[int, int], int] | None = None
        self.tuplet = None  # [p, q, remaining]
        self.broken = None  # (num, den) for the next note
        # (notes, start, duration, (letter, octave) of each) of the last note/chord/rest
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
        # whether a note was added out of (start, pitch) order (else the notes need no
        # sorting: see music())
        self.unsorted = False
        self.repeats = False  # a marker with a repeat sign or an ending


class _TuneReader:
    def __init__(self, lines: list[str], repeats: bool = True, fast: bool = True):
        self.lines = lines
        self.expand = repeats
        self.fast = fast  # False: no note takes music()'s quick way (the differential test)
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
        """Read music lines (one after the other, nothing else between them).

        What sounds (notes, chords, rests, ties) is read here: a written note's pitch, then
        the notes sounding from the voice's time. The state that changes with every note is
        kept in local variables meanwhile (it is most of the reading time) and written back to
        the voice around the methods that read every other kind of token (``_readers``).

        The commonest token, a plain note outside tuplets, broken rhythms and chords, takes a
        quick way that spells out the general code's rules for that case alone (the general
        code is twice as slow on it); tests/test_abc_reader_paths.py reads the music21 corpus
        and mutated texts both ways and compares."""
        vs = self.current()
        read = _READERS
        t, ties, tie_letters, bar_acc, last, sig, unit, notes = _hot_state(vs)
        quick = self._quick(vs)
        token_info = _token_table(unit)
        try:
            for tok in chain.from_iterable(map(_TOKENS.findall, lines)):
                info = token_info[tok]
                kind = info[0]
                if kind == NOTE and quick:
                    _, ((acc, li, lo, base),), los, _, dur = info
                    if acc is not None:
                        bar_acc[li] = acc
                        pitch = base + acc
                    elif bar_acc and li in bar_acc:
                        pitch = base + bar_acc[li]
                    else:
                        pitch = base + sig[li]
                        if tie_letters:
                            tp = tie_letters.get(lo)
                            if tp is not None and ties and pitch not in ties and tp in ties:
                                pitch = tp
                    if dur and dur > 0 and 0 <= pitch <= 127:
                        note = ties.get(pitch) if ties else None
                        if note is not None and note.start + note.duration == t:
                            note.duration += dur
                        else:  # (after every note before: time only goes back at "&")
                            note = Note(pitch, t, dur)
                            notes.append(note)
                        ties = tie_letters = None
                        last = ((note,), t, dur, los)
                        t += dur
                        vs.used = True
                        continue
                if kind == NOTE or kind == CHORD:  # a note, or a chord of plain notes
                    _, written, los, (n, d), dur = info
                    lengths = tied = None
                    if vs.in_chord:
                        if kind == NOTE:  # inside "[ ]": pitched here, sounds at the "]"
                            dur = None
                        else:  # a plain chord after "[": the "[" is dropped
                            vs.in_chord = False
                            vs.chord = None
                    if dur is None or vs.tuplet is not None or vs.broken is not None:
                        if not vs.in_chord:
                            dur = self._duration(vs, n, d)
                elif kind == BAR and not vs.in_chord:
                    t, bar_acc = self.bar(vs, info, t)
                    if not quick:  # (a bar line ends a tuplet)
                        quick = self._quick(vs)
                    continue
                elif kind == SKIP:
                    continue
                elif kind == TIE:
                    if vs.in_chord:
                        if vs.chord:
                            vs.chord[-1][3] = True
                    elif last is not None:
                        if ties is None:
                            ties = {}
                        if tie_letters is None:
                            tie_letters = {}
                        for x, lo in zip(last[0], last[3]):
                            ties[x.pitch] = x
                            tie_letters[lo] = x.pitch
                    continue
                elif kind == REST:
                    if vs.in_chord:
                        continue
                    _, (n, d), dur = info
                    if dur is None or vs.tuplet is not None or vs.broken is not None:
                        dur = self._duration(vs, n, d)
                        quick = self._quick(vs)
                    ties = tie_letters = None
                    last = ((), t, dur, ())
                    t += dur
                    vs.used = True
                    continue
                elif kind == CHORD_CLOSE or (kind == BAR and vs.in_chord):
                    if kind == BAR:
                        self.warn("chord not closed before a bar line", once="chord")
                    chord = self._chord_end(vs, info[1] if kind == CHORD_CLOSE else (1, 1))
                    if chord is None:
                        if kind == BAR:
                            t, bar_acc = self.bar(vs, info, t)
                            quick = self._quick(vs)
                        continue
                    written, los, lengths, tied, dur = chord
                else:
                    _keep_hot_state(vs, t, ties, tie_letters, bar_acc, last)
                    read[kind](self, vs, info)
                    vs = self.current()  # (V: changes the voice)
                    t, ties, tie_letters, bar_acc, last, sig, unit, notes = _hot_state(vs)
                    quick = self._quick(vs)
                    token_info = _token_table(unit)
                    continue

                sounded = self._sound(vs, kind, written, los, lengths, tied, n, d, dur,
                                      t, ties, tie_letters, bar_acc, sig, notes)
                if sounded is None:
                    continue
                t, ties, tie_letters, last = sounded
                if kind == BAR:
                    t, bar_acc = self.bar(vs, info, t)
                if not quick:  # (the token may have closed a chord, ended a tuplet)
                    quick = self._quick(vs)
        except Exception:  # "stopped reading": the voice as it was at the error
            if vs is self.cur:
                _keep_hot_state(vs, t, ties, tie_letters, bar_acc, last)
            raise
        _keep_hot_state(vs, t, ties, tie_letters, bar_acc, last)

    def _sound(self, vs: _VoiceState, kind: str, written, los, lengths, tied, n: int, d: int,
               dur, t: int, ties, tie_letters, bar_acc: dict, sig, notes: list):
        """Written notes (_pitch_info each) sounding at ``t`` for ``dur`` ticks (None: a note
        inside "[ ]", only pitched), with music()'s local state passed in: (the time after,
        the ties and tie letters going on from them, the voice's last sound), or None when
        nothing sounded."""
        # Each written note's pitch: its own accidental (which then holds to the bar's
        # end for its letter, or its letter and octave, as %%propagate-accidentals
        # says), else one written earlier in the bar, else the key signature's, where
        # a note tied over the bar line keeps its accidental (as abc2midi does). Then
        # the notes sound from the voice's time, which moves on dur (no notes: a rest):
        # each lasts dur or its own length in lengths, and goes on in a tie where tied
        # says so; a note tied into this time with the same pitch goes on (is
        # lengthened), any other is a new note.
        prop = self.propagate
        out = []
        new_ties = new_letters = None
        skipped = False
        ticks = dur
        for i, (acc, li, lo, base) in enumerate(written):
            if li is None:  # pitched where it was written (a "[ ]" chord's note)
                pitch = base
            else:
                held = li if prop == "pitch" else lo if prop == "octave" else None
                if acc is not None:
                    if held is not None:
                        bar_acc[held] = acc
                    pitch = base + acc
                elif held is not None and bar_acc and held in bar_acc:
                    pitch = base + bar_acc[held]
                else:
                    pitch = base + sig[li]
                    if tie_letters:
                        tp = tie_letters.get(lo)
                        if tp is not None and ties and pitch not in ties and tp in ties:
                            pitch = tp
            if dur is None:  # a note inside "[ ]"
                vs.chord.append([(None, None, lo, pitch), n, d, False])
                break
            if dur <= 0:
                continue
            if lengths is not None:
                ticks = lengths[i]
            if not 0 <= pitch <= 127:
                self.warn("note outside the MIDI range skipped", once="range")
                out.append(None)
                skipped = True
                continue
            note = ties.get(pitch) if ties else None
            if note is not None and note.start + note.duration == t:
                note.duration += ticks
            else:
                if notes:  # (else in order: _finish sorts a voice marked unsorted)
                    x = notes[-1]
                    if x.start > t or (x.start == t and x.pitch >= pitch):
                        vs.unsorted = True
                note = Note(pitch, t, ticks)
                notes.append(note)
            out.append(note)
            if tied is not None and tied[i]:
                if new_ties is None:
                    new_ties, new_letters = {}, {}
                new_ties[pitch] = note
                new_letters[los[i]] = pitch
        if dur is None:
            return None
        if dur <= 0:
            self.warn(f"{kind} of zero length skipped", once="zero")
            return None
        if skipped:
            los = [lo for lo, note in zip(los, out) if note is not None]
            out = [note for note in out if note is not None]
        vs.used = True
        return t + dur, new_ties, new_letters, (out, t, dur, los)

    def _quick(self, vs: _VoiceState) -> bool:
        """Whether a plain note may take music()'s quick way now."""
        return (self.fast and self.propagate == "pitch" and not vs.in_chord
                and vs.tuplet is None and vs.broken is None)

    # -- the other tokens, one method each, on the voice's state
    def chord_open(self, vs: _VoiceState, info: tuple) -> None:
        vs.in_chord = True
        vs.chord = []

    def _chord_end(self, vs: _VoiceState, length: tuple[int, int]):
        """What sounds at "]" of length (num, den): (its notes as written notes already
        pitched, (letter, octave) of each, ticks of each, whether each is tied on, the chord's
        ticks), or None."""
        chord = vs.chord or []
        vs.in_chord = False
        vs.chord = None
        n, d = length
        if not chord:
            return None
        # each note: its own length times the outer one; the chord lasts its first note's
        first = chord[0]
        fn, fd = first[1] * n, first[2] * d
        save_t, save_b = (list(vs.tuplet) if vs.tuplet else None), vs.broken
        dur = self._duration(vs, fn, fd)
        notes = []
        for pitched, cn, cd, tied in chord:
            cn *= n
            cd *= d
            if cn * fd == cd * fn:
                if dur > 0:
                    notes.append((pitched, pitched[2], dur, tied))
            else:
                cur_t, cur_b = vs.tuplet, vs.broken
                vs.tuplet, vs.broken = (list(save_t) if save_t else None), save_b
                x = self._duration(vs, cn, cd)
                vs.tuplet, vs.broken = cur_t, cur_b
                if x > 0:
                    notes.append((pitched, pitched[2], x, tied))
        if dur <= 0 or not notes:
            self.warn("chord of zero length skipped", once="zero")
            return None
        written, los, lengths, tied = zip(*notes)
        return written, los, lengths, tied, dur

    def inline_field(self, vs: _VoiceState, info: tuple) -> None:
        text = info[1]
        f, val = text[1], text[3:-1]
        if f in "VKLMQ":
            self.field(f, val, True)
        elif f not in "IrNRPT":
            self.warn(f"ignored inline field {text!r}", once="if" + f)

    def tuplet(self, vs: _VoiceState, info: tuple) -> None:
        _, p, q, r = info
        p = int(p)
        if not 2 <= p <= 32:
            self.warn(f"ignored tuplet ({p}", once="tup")
            return
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

    def overlay(self, vs: _VoiceState, info: tuple) -> None:
        """``&``: the next notes start again at the bar's start."""
        vs.bar_max = max(vs.bar_max, vs.t)
        vs.t = vs.bar_start
        vs.last = None
        vs.unsorted = True

    def unknown(self, vs: _VoiceState, info: tuple) -> None:
        self.warn(f"ignored character {info[1]!r}", once="ch" + info[1])

    # -- the rules every note follows
    def _duration(self, vs: _VoiceState, num: int, den: int) -> int:
        """Ticks of a length ``num/den`` of the unit, inside the current tuplet and broken
        rhythm (each note counts down the tuplet and takes the broken rhythm)."""
        n = vs.unit * num
        d = den
        tup = vs.tuplet
        if tup is not None:
            n *= tup[1]
            d *= tup[0]
            tup[2] -= 1
            if tup[2] <= 0:
                vs.tuplet = None
        if vs.broken is not None:
            bn, bd = vs.broken
            n *= bn
            d *= bd
            vs.broken = None
        return _ticks(n, d)

    def multi_rest(self, vs: _VoiceState, info: tuple) -> None:
        num = info[1]
        bars = int(num) if num else 1
        bar = vs.meter[0] * self.tpq * 4 // vs.meter[1]
        vs.ties = None
        vs.last = ([], vs.t, bar * bars, [])
        vs.t += bar * max(1, min(bars, 1000))
        vs.used = True

    def broken(self, vs: _VoiceState, info: tuple) -> None:
        text = info[1]
        k = len(text)
        if vs.last is None:
            return
        notes, start, dur, los = vs.last
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

    def bar(self, vs: _VoiceState, info: tuple, t: int) -> tuple[int, dict]:
        """A bar line at time ``t`` (music() keeps the voice's time): (the time after it, the
        bar's accidentals, none yet)."""
        if vs.bar_max:  # (a time before 0, after a broken rhythm on a huge rest, stays)
            if vs.bar_max > t:
                t = vs.bar_max
            vs.bar_max = 0
        _, text, ending = info
        if vs.bar_count == 0 and vs.first_bar is None:
            vs.first_bar = t
        vs.bar_count += 1
        vs.bar_start = t
        vs.tuplet = None
        if text:
            vs.markers.append((t, text, None))
            if ":" in text or text == "[":
                vs.repeats = True
        if ending is not None:
            vs.markers.append((t, "[", ending))
            vs.repeats = True
        return t, {}

    def ending(self, vs: _VoiceState, info: tuple) -> None:
        vs.markers.append((vs.t, "[", _ending_numbers(info[1])))
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


# what each kind of token that does not sound does (_TuneReader.music)
_READERS = {
    CHORD_OPEN: _TuneReader.chord_open, FIELD: _TuneReader.inline_field,
    TUPLET: _TuneReader.tuplet, BROKEN: _TuneReader.broken, ENDING: _TuneReader.ending,
    MULTI_REST: _TuneReader.multi_rest, OVERLAY: _TuneReader.overlay,
    UNKNOWN: _TuneReader.unknown,
}


def _strip_comment(line: str) -> str:
    i = line.find("%")
    while i > 0 and line[i - 1] == "\\":
        i = line.find("%", i + 1)
    return line if i < 0 else line[:i]


def _looks_like_music(s: str) -> bool:
    return "|" in s


_BAR_ENDING = re.compile(r"(\d+(?:[,-]\d+)*)$")


@functools.lru_cache(maxsize=1024)
def _bar_parts(text: str) -> tuple[str, tuple[int, ...] | None]:
    """A bar line's text split into the bar sign and the ending numbers after it."""
    m = _BAR_ENDING.search(text)
    if m:
        return text[:m.start()], _ending_numbers(m.group(1))
    return text, None


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
