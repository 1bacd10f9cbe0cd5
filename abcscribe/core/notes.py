"""The score model shared by MIDI, ABC, reward, Q&A and rendering.

Time is in integer ticks; ``TPQ`` ticks make a quarter note. 960 = 64 * 15 is divisible by 3
and by 64, so triplets and 1/64 notes are exact. Tempo is in quarter notes per minute.
"""

from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass, field

TPQ = 960


@dataclass(slots=True)
class Note:
    pitch: int  # MIDI pitch 0-127
    start: int  # ticks from the start of the piece
    duration: int  # ticks, > 0
    velocity: int = 80

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass
class Voice:
    notes: list[Note] = field(default_factory=list)
    program: int = 0  # General MIDI program 0-127 (ignored for drums)
    name: str = ""
    drum: bool = False

    def sort(self) -> None:
        self.notes.sort(key=lambda n: (n.start, n.pitch, n.duration))

    def chords(self) -> list[tuple[int, tuple[int, ...]]]:
        """Onset-grouped pitches: [(start, (pitches ascending)), ...] in time order."""
        groups: dict[int, list[int]] = {}
        for n in self.notes:
            groups.setdefault(n.start, []).append(n.pitch)
        return [(t, tuple(sorted(p))) for t, p in sorted(groups.items())]


@dataclass(frozen=True, slots=True)
class Tempo:
    tick: int
    bpm: float  # quarter notes per minute


@dataclass(frozen=True, slots=True)
class Meter:
    tick: int
    numerator: int
    denominator: int

    @property
    def bar_ticks(self) -> int:
        return self.numerator * TPQ * 4 // self.denominator

    @property
    def beat_ticks(self) -> int:
        """A beat: three of the denominator's notes in a compound metre (6/8, 9/8, 12/8, 6/16),
        else one (3/8 counts its eighths)."""
        unit = TPQ * 4 // self.denominator
        return 3 * unit if self.denominator >= 8 and self.numerator % 3 == 0 and self.numerator > 3 else unit


@dataclass(frozen=True, slots=True)
class Key:
    fifths: int = 0  # -7..7, sharps positive
    mode: str = "major"  # major, minor, dorian, mixolydian, ... (ABC mode names, lower case)
    tonic: str = "C"  # e.g. "C", "F#", "Bb"

    def __str__(self) -> str:
        return self.tonic + ("" if self.mode == "major" else " " + self.mode)


@dataclass
class Piece:
    voices: list[Voice] = field(default_factory=list)
    tempos: list[Tempo] = field(default_factory=lambda: [Tempo(0, 120.0)])
    meters: list[Meter] = field(default_factory=lambda: [Meter(0, 4, 4)])
    key: Key | None = None  # None: unknown (writers may estimate it)
    anacrusis: int = 0  # ticks of pickup before the first full bar
    title: str = ""
    tpq: int = TPQ

    # ---- derived facts -------------------------------------------------------------
    @property
    def end_tick(self) -> int:
        return max((n.end for v in self.voices for n in v.notes), default=0)

    @property
    def note_count(self) -> int:
        return sum(len(v.notes) for v in self.voices)

    @property
    def bpm(self) -> float:
        return self.tempos[0].bpm if self.tempos else 120.0

    @property
    def meter(self) -> Meter:
        return self.meters[0] if self.meters else Meter(0, 4, 4)

    def meter_at(self, tick: int) -> Meter:
        ms = self.meters or [Meter(0, 4, 4)]
        i = bisect.bisect_right([m.tick for m in ms], tick) - 1
        return ms[max(i, 0)]

    def tempo_at(self, tick: int) -> float:
        ts = self.tempos or [Tempo(0, 120.0)]
        i = bisect.bisect_right([t.tick for t in ts], tick) - 1
        return ts[max(i, 0)].bpm

    def bar_starts(self, end: int | None = None) -> list[int]:
        """Ticks where bars begin, up to ``end`` (default: the piece's end). With an anacrusis,
        the pickup bar starts at 0 and the first full bar at ``anacrusis``."""
        end = self.end_tick if end is None else end
        starts = [0]
        t = self.anacrusis if self.anacrusis > 0 else 0
        if t > 0:
            starts.append(t)
        while True:
            m = self.meter_at(t)
            nxt = [mm.tick for mm in self.meters if t < mm.tick < t + m.bar_ticks]
            t = nxt[0] if nxt else t + m.bar_ticks
            if t >= end:
                break
            starts.append(t)
        return starts

    # ---- time conversion through the tempo map -------------------------------------
    def _segments(self) -> tuple[list[int], list[float], list[float]]:
        ts = sorted(self.tempos or [Tempo(0, 120.0)], key=lambda t: t.tick)
        if ts[0].tick != 0:
            ts = [Tempo(0, ts[0].bpm)] + ts
        ticks, secs, bpms = [], [], []
        s = 0.0
        for i, t in enumerate(ts):
            if i:
                s += (t.tick - ts[i - 1].tick) * 60.0 / (ts[i - 1].bpm * self.tpq)
            ticks.append(t.tick)
            secs.append(s)
            bpms.append(t.bpm)
        return ticks, secs, bpms

    def seconds(self, tick: float) -> float:
        """Seconds from the start at ``tick``."""
        ticks, secs, bpms = self._segments()
        i = max(bisect.bisect_right(ticks, tick) - 1, 0)
        return secs[i] + (tick - ticks[i]) * 60.0 / (bpms[i] * self.tpq)

    def tick_at(self, seconds: float) -> float:
        """Inverse of ``seconds`` (fractional ticks)."""
        ticks, secs, bpms = self._segments()
        i = max(bisect.bisect_right(secs, seconds) - 1, 0)
        return ticks[i] + (seconds - secs[i]) * bpms[i] * self.tpq / 60.0

    @property
    def duration_seconds(self) -> float:
        return self.seconds(self.end_tick)

    # ---- helpers --------------------------------------------------------------------
    def copy(self) -> "Piece":
        return copy.deepcopy(self)

    def sort(self) -> "Piece":
        for v in self.voices:
            v.sort()
        self.tempos.sort(key=lambda t: t.tick)
        self.meters.sort(key=lambda m: m.tick)
        return self
