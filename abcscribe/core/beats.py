"""Beats of a performance: a played recording's notes (MAESTRO's MIDI, URMP's note annotations)
carry times in seconds, not a score's beats. Its tempo map and time signature, when it has one,
are placeholders (MAESTRO: 120 BPM, 4/4). Here the beats are tracked from the note onsets and
the piece is re-timed on them, so tempo answers and bar lines come from the music played."""

from __future__ import annotations

import numpy as np

from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

FRAME_RATE = 100  # onset envelope frames per second
RUN_TOLERANCE = 0.04  # beats within 4% of a run's tempo share one Q: (fewer tempo changes)
TIMING = ("beats tracked from the note onsets; bar lines are those beats (metre unknown), "
          "tempo is their mean over the clip")


def seconds_piece(voices: list[Voice]) -> Piece:
    """A piece whose ticks are seconds (``TPQ`` ticks a second: 60 quarter notes a minute)."""
    return Piece(voices=voices, tempos=[Tempo(0, 60.0)], meters=[Meter(0, 4, 4)])


def track_beats(onsets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Beat times in seconds tracked from note onsets (seconds), weighted by velocity; an
    empty array when there are too few notes to tell. Ellis' dynamic-programming tracker
    (2007): a global tempo from the onset envelope's autocorrelation under a prior around 120
    BPM, then the beat sequence that best fits the onsets while keeping near that tempo."""
    onsets = np.asarray(onsets, np.float64)
    if len(onsets) < 8:
        return np.zeros(0)
    w = np.ones(len(onsets)) if weights is None else np.asarray(weights, np.float64)
    n = int(np.ceil(onsets.max() * FRAME_RATE)) + FRAME_RATE
    env = np.bincount(np.rint(onsets * FRAME_RATE).astype(np.int64), w, n)
    env = np.convolve(env, [0.25, 0.5, 1.0, 0.5, 0.25], mode="same")
    env /= env.std() or 1.0
    period = _global_period(env)
    if period is None:
        return np.zeros(0)
    beats = _dp_beats(env, period) / FRAME_RATE
    keep = (beats >= onsets.min() - period / FRAME_RATE / 2) & (
        beats <= onsets.max() + period / FRAME_RATE / 2)
    beats = beats[keep]
    return beats if len(beats) >= 4 else np.zeros(0)


def _global_period(env: np.ndarray) -> float | None:
    """Beat period in frames: the peak between 40 and 200 BPM of the onset envelope's
    autocorrelation plus half its value at twice the lag (so a pulse whose multiples also
    recur beats its own subdivision), weighted by a log-normal prior around 120 BPM (one
    octave wide), refined between frames."""
    x = env - env.mean()
    spec = np.fft.rfft(x, 4 * len(x))
    ac = np.fft.irfft(spec * np.conj(spec))[: 2 * len(x)]
    lo, hi = int(60 * FRAME_RATE / 200), int(60 * FRAME_RATE / 40)
    if 2 * hi + 2 >= len(x):
        return None
    # a played beat wanders by a few percent: the mass of the peak within 3% of each lag
    cum = np.concatenate(([0.0], np.cumsum(ac)))
    lags = np.arange(lo, 2 * hi + 2)
    w = np.maximum(1, np.rint(0.03 * lags)).astype(np.int64)
    mass = cum[lags + w + 1] - cum[lags - w]
    lags = lags[: hi + 1 - lo]
    prior = np.exp(-0.5 * np.log2(lags / (60.0 * FRAME_RATE / 120)) ** 2)
    salience = (mass[: len(lags)] + 0.5 * mass[lags - lo + lags]) * prior
    k = int(np.argmax(salience)) + lo
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
    return float(k + max(-0.5, min(0.5, shift)))


def _dp_beats(env: np.ndarray, period: float, tightness: float = 100.0) -> np.ndarray:
    """Frames of the beat sequence maximising onset strength at the beats minus
    ``tightness`` times the squared log deviation of each interval from ``period``."""
    n = len(env)
    score = env.copy()
    back = np.full(n, -1)
    lo, hi = max(1, int(round(period / 2))), int(round(2 * period))
    gaps = np.arange(lo, hi + 1)
    penalty = -tightness * np.log(gaps / period) ** 2
    # a frame looks back at least ``lo`` frames: a block of ``lo`` frames is computed at once
    for block in range(lo, n, lo):
        t = np.arange(block, min(block + lo, n))[:, None]
        prev = t - gaps[None, :]
        cand = np.where(prev >= 0, score[np.maximum(prev, 0)] + penalty, -np.inf)
        i = np.argmax(cand, axis=1)
        best = cand[np.arange(len(i)), i]
        better = best > 0
        rows = t[:, 0][better]
        score[rows] += best[better]
        back[rows] = rows - gaps[i[better]]
    tail = max(0, n - int(round(period)))
    t = tail + int(np.argmax(score[tail:]))
    beats = [t]
    while back[t] >= 0:
        t = int(back[t])
        beats.append(t)
    return np.array(beats[::-1], np.float64)


def beat_tempo_map(beats: np.ndarray) -> tuple[list[Tempo], int]:
    """A tempo map putting a quarter note on each beat (runs of beats within
    ``RUN_TOLERANCE`` of one tempo share one tempo; a run ends exactly on its last beat), and
    the pickup before the first beat in ticks (whole sixteenths)."""
    beats = list(beats)
    period = beats[1] - beats[0]
    while beats[0] - period > period / 8:  # silence or a missed start: beats before the first
        beats.insert(0, beats[0] - period)
    sixteenths = int(round(beats[0] / period * 4))
    tempos: list[Tempo] = []
    if sixteenths >= 4:
        beats.insert(0, max(0.0, beats[0] - period))
        sixteenths = 0
    if sixteenths == 0:
        beats[0] = 0.0
        pickup = 0
    else:
        pickup = sixteenths * TPQ // 4
        tempos.append(Tempo(0, float(60.0 * sixteenths / 4 / beats[0])))
    i = 0
    while i < len(beats) - 1:
        j = i + 1
        while j < len(beats) - 1:
            mean = (beats[j] - beats[i]) / (j - i)
            if abs((beats[j + 1] - beats[j]) - mean) > RUN_TOLERANCE * mean:
                break
            j += 1
        tempos.append(Tempo(pickup + i * TPQ, float(60.0 * (j - i) / (beats[j] - beats[i]))))
        i = j
    return tempos, pickup


def retime(performance: Piece) -> Piece | None:
    """``performance`` (notes at the right seconds through its own tempo map) re-timed on its
    tracked beats: a quarter note per beat, a bar per beat (``1/4``), a pickup up to the first
    beat. None when no beat can be tracked (too few notes)."""
    starts = np.array([n.start for v in performance.voices for n in v.notes], np.float64)
    ends = np.array([n.end for v in performance.voices for n in v.notes], np.float64)
    vels = np.array([n.velocity for v in performance.voices for n in v.notes], np.float64)
    on, off = to_seconds(performance, starts), to_seconds(performance, ends)
    beats = track_beats(on, vels)
    if len(beats) == 0:
        return None
    tempos, pickup = beat_tempo_map(beats)
    out = Piece(voices=[], tempos=tempos, meters=[Meter(0, 1, 4)], key=performance.key,
                anacrusis=pickup, title=performance.title)
    s_ticks = np.rint(to_ticks(out, on)).astype(np.int64).tolist()
    e_ticks = np.rint(to_ticks(out, off)).astype(np.int64).tolist()
    i = 0
    for v in performance.voices:
        new = Voice(program=v.program, name=v.name, drum=v.drum)
        for n in v.notes:
            new.notes.append(Note(n.pitch, s_ticks[i], max(1, e_ticks[i] - s_ticks[i]), n.velocity))
            i += 1
        out.voices.append(new)
    return out


def _segments(piece: Piece) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start tick, start second and seconds per tick of each tempo segment."""
    ts = sorted(piece.tempos or [Tempo(0, 120.0)], key=lambda t: t.tick)
    ticks = np.array([0] + [t.tick for t in ts[1:]], np.float64)
    rate = np.array([60.0 / (t.bpm * piece.tpq) for t in ts])
    secs = np.concatenate(([0.0], np.cumsum(np.diff(ticks) * rate[:-1])))
    return ticks, secs, rate


def to_seconds(piece: Piece, ticks: np.ndarray) -> np.ndarray:
    """``piece.seconds`` of many ticks at once (an array)."""
    t0, s0, rate = _segments(piece)
    i = np.maximum(np.searchsorted(t0, ticks, side="right") - 1, 0)
    return s0[i] + (ticks - t0[i]) * rate[i]


def to_ticks(piece: Piece, seconds: np.ndarray) -> np.ndarray:
    """``piece.tick_at`` of many times in seconds at once (an array of fractional ticks)."""
    t0, s0, rate = _segments(piece)
    i = np.maximum(np.searchsorted(s0, seconds, side="right") - 1, 0)
    return t0[i] + (seconds - s0[i]) / rate[i]
