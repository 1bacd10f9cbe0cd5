"""The ``baseline`` transcriber: no trained weights, a real result on any machine.

Onsets come from spectral flux, the pitch of each note from harmonic summation over a
constant-Q spectrogram (three bins per semitone), beats from librosa's beat tracker. Note
times are mapped onto the beat grid (a quarter note per beat, sixteenth-note resolution),
the tempo is the beat tracker's, the metre a guess from the accent pattern on the beats. The
result is one monophonic voice written with ``core.abc.write_abc``.

``Baseline`` has the ``AudioLM`` interface, so ``--model baseline`` runs through the same
windowing, batching and stitching as a trained model."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from abcscribe.core.audio import load_librosa
from abcscribe.core.models.base import AudioLM, GenerationOptions
from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

SR = 22050
HOP = 256  # 11.6 ms frames: onsets land well inside the 50 ms tolerance of note F1
BINS_PER_SEMITONE = 3
FMIN_MIDI = 36  # C2
N_SEMITONES = 72  # up to C8
HARMONIC_WEIGHTS = (1.0, 0.8, 0.6, 0.45, 0.3)
GRID = 4  # positions per beat: sixteenth notes when the beat is a quarter
ONSET_LAG = 0.03  # seconds from a note's start to the peak of spectral flux, typically
PROGRAM = 0  # Acoustic Grand Piano: the baseline cannot tell instruments apart


@dataclass
class BeatInfo:
    """Beat times (seconds), tempo (quarter notes per minute), metre and the index in
    ``times`` of the first downbeat."""

    times: np.ndarray
    bpm: float
    meter: tuple[int, int] = (4, 4)
    downbeat: int = 0

    @property
    def found(self) -> bool:
        return len(self.times) >= 4

    def shifted(self, start: float, end: float) -> "BeatInfo":
        """The beats inside [start, end), relative to ``start``; the downbeat index moved so
        that bars stay where they were."""
        i0 = int(np.searchsorted(self.times, start - 1e-6))
        i1 = int(np.searchsorted(self.times, end - 1e-6))
        k = self.meter[0]
        return BeatInfo(self.times[i0:i1] - start, self.bpm, self.meter, (self.downbeat - i0) % k)

    def as_dict(self) -> dict[str, Any]:
        return {
            "times": [round(float(t), 4) for t in self.times],
            "bpm": self.bpm,
            "meter": list(self.meter),
            "downbeat": self.downbeat,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BeatInfo":
        return cls(
            np.asarray(d.get("times", []), dtype=float),
            float(d.get("bpm", 120.0)),
            tuple(d.get("meter", (4, 4))),  # type: ignore[arg-type]
            int(d.get("downbeat", 0)),
        )


def onset_envelope(audio: np.ndarray, sr: int) -> np.ndarray:
    librosa = load_librosa()

    return librosa.onset.onset_strength(y=audio, sr=sr, hop_length=HOP)


def track_beats(audio: np.ndarray, sr: int, envelope: np.ndarray | None = None) -> BeatInfo:
    """Beats, tempo, metre and first downbeat of ``audio``. With fewer than four beats found,
    ``times`` is empty and the tempo is 120."""
    librosa = load_librosa("librosa.beat")

    env = onset_envelope(audio, sr) if envelope is None else envelope
    if len(env) < 8 or not np.any(env > 0):
        return BeatInfo(np.zeros(0), 120.0)
    tempo, frames = librosa.beat.beat_track(onset_envelope=env, sr=sr, hop_length=HOP)
    if len(frames) < 4:
        return BeatInfo(np.zeros(0), 120.0)
    # The tracker follows the music locally and sometimes slips half a beat; a note's time
    # in the written score comes from one Q: tempo, so the grid notes are placed on is the
    # steady one that best fits the onsets, near the tracker's tempo.
    period0 = float(np.median(np.diff(frames)))
    t0, period = fit_grid(env, period0)
    n_frames = len(env)
    grid = np.arange(t0, n_frames, period)
    times = librosa.frames_to_time(grid, sr=sr, hop_length=HOP)
    bpm = float(np.clip(60.0 / (period * HOP / sr), 30, 300))
    num, downbeat = guess_meter(env, np.round(grid).astype(int))
    return BeatInfo(times, float(round(bpm)), (num, 4), downbeat)


def fit_grid(envelope: np.ndarray, period0: float) -> tuple[float, float]:
    """(first beat, period) in frames of the evenly spaced grid within 4% of ``period0`` that
    collects the most onset strength."""
    env = envelope / max(float(envelope.max()), 1e-9)
    n = len(env)
    best = (-1.0, 0.0, period0)
    frames = np.arange(n, dtype=float)
    for period in period0 * np.linspace(0.96, 1.04, 81):
        phases = np.arange(0.0, period, 0.5)
        # onset strength at each grid point (linear interpolation), summed per phase
        pts = phases[:, None] + np.arange(0.0, n - period, period)[None, :]
        pts = pts[:, : max(int((n - 1 - phases[-1]) // period), 1)]
        vals = np.interp(pts, frames, env).mean(axis=1)
        i = int(np.argmax(vals))
        if vals[i] > best[0]:
            best = (float(vals[i]), float(phases[i]), float(period))
    return best[1], best[2]


def guess_meter(envelope: np.ndarray, beat_frames: np.ndarray) -> tuple[int, int]:
    """(beats per bar, index of the first downbeat): the grouping of beats into threes or
    fours whose strongest phase stands out most from the other beats. Ties go to four,
    the commonest metre."""
    strength = envelope[np.clip(beat_frames, 0, len(envelope) - 1)]
    best = (0.0, 4, 0)
    for k in (4, 3):
        if len(strength) < 2 * k:
            continue
        means = [strength[p::k].mean() for p in range(k)]
        p = int(np.argmax(means))
        rest = np.delete(strength, np.s_[p::k]).mean()
        contrast = means[p] / max(rest, 1e-9)
        if k == 3:
            contrast *= 0.9  # prefer 4/4 unless triple accents are clearly stronger
        if contrast > best[0]:
            best = (contrast, k, p)
    return best[1], best[2]


def _cqt(audio: np.ndarray, sr: int, n_bins: int) -> np.ndarray:
    librosa = load_librosa()

    return librosa.cqt(
        audio,
        sr=sr,
        hop_length=HOP,
        fmin=librosa.midi_to_hz(FMIN_MIDI) / 2 ** (1 / 36),  # centre bins on semitones
        n_bins=n_bins,
        bins_per_octave=12 * BINS_PER_SEMITONE,
    )


def _salience(audio: np.ndarray, sr: int) -> np.ndarray:
    """Pitch salience [semitones, frames] by harmonic summation over a CQT magnitude."""
    librosa = load_librosa()

    n_bins = (N_SEMITONES + 36) * BINS_PER_SEMITONE  # room for the 5th harmonic of the top
    fmax_bins = int(np.floor(BINS_PER_SEMITONE * 12 * np.log2(sr / 2 / librosa.midi_to_hz(FMIN_MIDI))))
    n_bins = min(n_bins, fmax_bins - 1)
    with warnings.catch_warnings():
        # a clip shorter than the low octaves' filters is analysed all the same; librosa says so
        warnings.simplefilter("ignore", UserWarning)
        c = np.abs(_cqt(audio, sr, n_bins))
    c = np.log1p(100 * c / max(float(c.max()), 1e-9))
    # the best of the three bins around each semitone absorbs slight detuning
    pad = np.pad(c, ((1, 1), (0, 0)))
    c = np.maximum(np.maximum(pad[:-2], pad[1:-1]), pad[2:])
    sal = np.zeros((N_SEMITONES, c.shape[1]), dtype=np.float32)
    for h, w in enumerate(HARMONIC_WEIGHTS, 1):
        off = int(round(12 * BINS_PER_SEMITONE * np.log2(h)))
        idx = np.arange(N_SEMITONES) * BINS_PER_SEMITONE + BINS_PER_SEMITONE // 2 + off
        ok = idx < c.shape[0]
        sal[ok] += w * c[idx[ok]]
    return sal


def detect_notes(audio: np.ndarray, sr: int, envelope: np.ndarray | None = None) -> list[tuple[float, float, int, float]]:
    """Notes as (onset s, offset s, MIDI pitch, strength 0-1), one at a time (monophonic)."""
    librosa = load_librosa()

    env = onset_envelope(audio, sr) if envelope is None else envelope
    if len(env) < 4 or not np.any(env > 0):
        return []
    onsets = librosa.onset.onset_detect(
        onset_envelope=env, sr=sr, hop_length=HOP, backtrack=False, units="frames"
    )
    if len(onsets) == 0:
        return []
    sal = _salience(audio, sr)
    n_frames = sal.shape[1]
    frame_energy = sal.max(axis=0)
    silence = 0.15 * float(np.percentile(frame_energy, 95))
    notes = []
    bounds = list(onsets) + [n_frames]
    peak_env = float(env.max()) or 1.0
    for i, f0 in enumerate(onsets):
        f1 = min(bounds[i + 1], n_frames)
        # judge the pitch just after the attack, where the spectrum has settled
        a = min(f0 + 2, f1 - 1)
        b = min(max(a + 1, f0 + 14), f1)
        if b <= a or a >= n_frames:
            continue
        prof = sal[:, a:b].mean(axis=1)
        k = int(np.argmax(prof))
        if prof[k] < silence:
            continue
        # the note lasts until the sound fades (a decaying piano note still counts) or the next
        # onset, whichever comes first
        track = frame_energy[a:f1]
        below = np.nonzero(track < max(silence, 0.3 * float(frame_energy[a])))[0]
        end = a + (int(below[0]) if len(below) else len(track))
        end = max(end, f0 + 3)
        t0 = librosa.frames_to_time(f0, sr=sr, hop_length=HOP)
        t1 = librosa.frames_to_time(end, sr=sr, hop_length=HOP)
        notes.append((float(t0), float(t1), FMIN_MIDI + k, float(env[f0] / peak_env)))
    return notes


def _beat_position(times: np.ndarray, beats: np.ndarray, period: float) -> np.ndarray:
    """Fractional beat index of each time: interpolated between tracked beats, extended at
    the tracker's period before the first and after the last."""
    pos = np.interp(times, beats, np.arange(len(beats), dtype=float))
    before = times < beats[0]
    after = times > beats[-1]
    pos[before] = (times[before] - beats[0]) / period
    pos[after] = len(beats) - 1 + (times[after] - beats[-1]) / period
    return pos


def transcribe_audio(
    audio: np.ndarray, sr: int, beats: BeatInfo | None = None, title: str = ""
) -> Piece:
    """One monophonic voice of quantized notes, tempo and metre from ``beats`` (tracked here
    when None). Tick 0 is the start of ``audio``."""
    env = onset_envelope(audio, sr)
    if beats is None:
        beats = track_beats(audio, sr, env)
    raw = detect_notes(audio, sr, env)
    bpm = float(beats.bpm) or 120.0
    period = 60.0 / bpm
    num, den = beats.meter
    if beats.found:
        grid_beats = np.asarray(beats.times, dtype=float)
    else:
        grid_beats = np.arange(0.0, len(audio) / sr + period, period)
    # ticks run from the start of the audio: the first beat sits this many beats in (onsets
    # are found a little after a note starts, so the grid is moved back by that much before
    # rounding; positions on the grid are not affected, the lag is the same for all)
    lead = round(max(float(grid_beats[0]) - ONSET_LAG, 0.0) / period * GRID) / GRID
    step = TPQ // GRID
    voice = Voice(program=PROGRAM, name="Acoustic Grand Piano")
    if raw:
        on = _beat_position(np.array([n[0] for n in raw]), grid_beats, period) + lead
        off = _beat_position(np.array([n[1] for n in raw]), grid_beats, period) + lead
        starts = np.maximum(np.round(on * GRID), 0).astype(int) * step
        ends = np.round(off * GRID).astype(int) * step
        for i, (t0, t1, pitch, strength) in enumerate(raw):
            s = int(starts[i])
            e = max(int(ends[i]), s + step)
            if i + 1 < len(raw):
                nxt = max(int(starts[i + 1]), s + step)
                # a release a hair before the next note is legato played or heard short: tie
                # it over rather than write a sixteenth rest
                if nxt - e <= max(step, (e - s) // 4):
                    e = nxt
                e = min(e, nxt)  # monophonic: no overlaps
            if voice.notes and voice.notes[-1].start == s:
                continue  # two onsets quantized onto one grid slot: keep the first
            voice.notes.append(Note(pitch, s, e - s, int(40 + 80 * min(strength, 1.0))))
    bar = num * TPQ * 4 // den
    # first downbeat in ticks from the start; earlier notes form a pickup bar
    downbeat_tick = int(round((lead + beats.downbeat) * TPQ)) if beats.found else 0
    anacrusis = downbeat_tick % bar
    return Piece(
        voices=[voice],
        tempos=[Tempo(0, round(bpm))],
        meters=[Meter(0, num, den)],
        anacrusis=anacrusis,
        title=title,
    )


class Baseline(AudioLM):
    """``--model baseline``: signal processing behind the ``AudioLM`` interface.

    Records carry ``audio`` (+ ``offset``, ``duration``) or an ``array`` already loaded at
    ``sample_rate``; a ``beats`` entry (``BeatInfo.as_dict()``, relative to the record's
    start) makes windows of one file share one tempo and bar grid."""

    family = "baseline"
    sample_rate = SR
    window_seconds = 30.0
    device = "cpu"

    def _audio(self, rec: dict[str, Any]) -> np.ndarray:
        if rec.get("array") is not None:
            return np.asarray(rec["array"], dtype=np.float32)
        from abcscribe.core.audio import load_audio

        audio, _ = load_audio(
            rec["audio"], sr=SR, offset=float(rec.get("offset") or 0.0), duration=rec.get("duration")
        )
        return audio

    def transcribe_piece(self, rec: dict[str, Any]) -> Piece:
        beats = BeatInfo.from_dict(rec["beats"]) if rec.get("beats") else None
        return transcribe_audio(self._audio(rec), SR, beats)

    def generate(self, records: list[dict[str, Any]], opts: GenerationOptions) -> list[list[str]]:
        from abcscribe.core.abc import write_abc

        # deterministic: every sample of a record is the same transcription
        return [[write_abc(self.transcribe_piece(r))] * opts.num_samples for r in records]

    def save(self, out_dir, extra=None) -> None:  # pragma: no cover - nothing to save
        raise NotImplementedError("the baseline has no weights to save")
