"""The built-in synthesiser: additive harmonic timbres with envelopes that differ by General MIDI
family, plus synthetic drums, all in numpy and deterministic (same Piece, same samples).

It is not meant to sound like a soundfont; it is meant to make instruments spectrally distinct
(which partials, how they decay, attack speed, vibrato, chorus) so that Q&A data asking a model
to name instruments has something to hear, with no system packages needed."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from abcscribe.core.gm import family
from abcscribe.core.notes import Piece

PEAK = 0.9  # the mix is scaled so its loudest sample is this


@dataclass(frozen=True)
class Timbre:
    """How one GM family sounds: partial frequency ratios and amplitudes, an envelope (attack
    seconds, decay time constant toward ``sustain``, release seconds after note-off), extra
    damping of higher partials (plucked and struck sounds get darker as they ring), vibrato
    depth in semitones, a detuned chorus copy in cents, and breath noise."""

    ratios: tuple[float, ...]
    amps: tuple[float, ...]
    attack: float = 0.01
    decay: float = 0.0  # 0: no decay stage
    sustain: float = 1.0
    release: float = 0.08
    damping: float = 0.0  # per-partial extra decay rate (1/s) times (k - 1)
    vibrato: float = 0.0
    detune: float = 0.0
    noise: float = 0.0
    pitch_decay: bool = False  # low notes ring longer (pianos, guitars)


def _harm(n: int, fn) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ks = range(1, n + 1)
    return tuple(float(k) for k in ks), tuple(float(fn(k)) for k in ks)


# One timbre per GM family (index = program // 8).
TIMBRES: tuple[Timbre, ...] = (
    # 0 Piano: struck, bright onset that darkens, long decay
    Timbre(*_harm(10, lambda k: 1 / k**1.1), attack=0.004, decay=0.7, sustain=0.12,
           release=0.12, damping=1.2, pitch_decay=True),
    # 1 Chromatic percussion: bell/mallet, inharmonic partials, fast decay
    Timbre((1.0, 2.76, 5.40, 8.93), (1.0, 0.55, 0.3, 0.15), attack=0.002, decay=0.45,
           sustain=0.0, release=0.15, damping=2.5),
    # 2 Organ: drawbars, sub-octave, steady
    Timbre((0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0), (0.5, 1.0, 0.75, 0.5, 0.45, 0.3, 0.25),
           attack=0.012, release=0.04),
    # 3 Guitar: plucked near the bridge, decays, darkens
    Timbre(*_harm(12, lambda k: abs(math.sin(math.pi * k * 0.18)) / k), attack=0.003,
           decay=0.9, sustain=0.0, release=0.08, damping=1.8, pitch_decay=True),
    # 4 Bass: strong fundamental, few partials
    Timbre((1.0, 2.0, 3.0, 4.0, 5.0), (1.0, 0.45, 0.2, 0.1, 0.05), attack=0.006, decay=1.2,
           sustain=0.25, release=0.06, damping=0.8),
    # 5 Strings: bowed sawtooth, slow attack, vibrato
    Timbre(*_harm(14, lambda k: 1 / k), attack=0.09, release=0.12, vibrato=0.12),
    # 6 Ensemble: darker saw, slower attack, chorus
    Timbre(*_harm(10, lambda k: 1 / k**1.4), attack=0.16, release=0.18, detune=9.0,
           vibrato=0.05),
    # 7 Brass: formant around partials 3-5, fast swell
    Timbre(*_harm(14, lambda k: k / (1 + (k / 4.0) ** 2.5)), attack=0.04, decay=0.25,
           sustain=0.8, release=0.07, vibrato=0.04),
    # 8 Reed: odd partials dominate (clarinet-like), some even
    Timbre(*_harm(11, lambda k: (1 / k) if k % 2 else 0.12 / k), attack=0.03, release=0.06,
           vibrato=0.06),
    # 9 Pipe: almost a sine, breathy
    Timbre((1.0, 2.0, 3.0), (1.0, 0.12, 0.05), attack=0.05, release=0.08, vibrato=0.08,
           noise=0.04),
    # 10 Synth lead: bright full sawtooth, instant, no vibrato
    Timbre(*_harm(24, lambda k: 1 / k), attack=0.004, release=0.04),
    # 11 Synth pad: soft, very slow attack, wide chorus
    Timbre(*_harm(8, lambda k: 1 / k**2), attack=0.3, release=0.35, detune=14.0),
    # 12 Synth effects: inharmonic, wobbling
    Timbre((1.0, 1.5, 2.01, 3.03), (1.0, 0.6, 0.4, 0.3), attack=0.08, release=0.25,
           vibrato=0.35),
    # 13 Ethnic: buzzy plucked (sitar, banjo), flat spectrum
    Timbre(*_harm(16, lambda k: 1 / math.sqrt(k)), attack=0.003, decay=0.6, sustain=0.05,
           release=0.1, damping=0.6, detune=4.0),
    # 14 Percussive: pitched drum, very short
    Timbre((1.0, 1.59, 2.14, 2.3), (1.0, 0.5, 0.3, 0.2), attack=0.002, decay=0.15,
           sustain=0.0, release=0.08, damping=3.0),
    # 15 Sound effects: noisy tone
    Timbre((1.0, 2.0), (1.0, 0.3), attack=0.05, release=0.2, noise=0.5),
)


def timbre_for(program: int) -> Timbre:
    return TIMBRES[family(program)]


def varied(tb: Timbre, rng: np.random.Generator, spread: float) -> Timbre:
    """Another instrument of ``tb``'s kind: each partial's level scaled by up to a factor of
    e^(spread/2) either way and the spectrum tilted, attack, decay, sustain, damping and breath
    scaled by up to e^spread, vibrato anywhere from none to twice as deep (``spread`` > 0);
    what is left is what makes the family (harmonic or not, struck or bowed)."""

    def scale() -> float:
        return float(np.exp(rng.uniform(-spread, spread)))

    ratios = np.asarray(tb.ratios)
    amps = np.asarray(tb.amps) * np.exp(rng.normal(0.0, 0.5 * spread, ratios.size))
    amps = amps * ratios ** (-rng.uniform(-0.5, 0.8) * spread)
    return replace(tb, amps=tuple(float(a) for a in amps), attack=tb.attack * scale(),
                   decay=tb.decay * scale(), sustain=min(1.0, tb.sustain * scale()),
                   damping=tb.damping * scale(), vibrato=tb.vibrato * float(rng.uniform(0.0, 2.0)),
                   noise=tb.noise * scale())  # fmt: skip


def synthesize(piece: Piece, sr: int = 22050, tail: float = 0.5, spread: float = 0.0,
               seed: int = 0) -> np.ndarray:
    """Mono float32 audio of ``piece`` lasting its duration plus ``tail`` seconds, normalised so
    the loudest sample is PEAK (silence stays zeros). ``spread`` > 0: every family's timbre is
    :func:`varied` (drawn from ``seed``, the same for every voice of a family), so that
    pieces rendered with different seeds sound like different instruments of each kind."""
    from abcscribe.core.progress import meter

    timbres = TIMBRES
    if spread > 0:
        rng = np.random.default_rng(seed)
        timbres = tuple(varied(tb, rng, spread) for tb in TIMBRES)
    n_total = int(math.ceil((piece.duration_seconds + tail) * sr))
    out = np.zeros(n_total, np.float64)
    to_sec = _tick_to_seconds(piece)
    with meter(sum(len(v.notes) for v in piece.voices), "synth", unit="note") as bar:
        for voice in piece.voices:
            if voice.notes:
                _add_voice(voice, to_sec, sr, out, bar, timbres)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0:
        out *= PEAK / peak
    return out.astype(np.float32)


def _add_voice(voice, to_sec, sr: int, out: np.ndarray, bar, timbres=TIMBRES) -> None:
    """Add ``voice``'s notes, synthesised, into ``out``; ``bar`` counts them."""
    starts = to_sec(np.array([n.start for n in voice.notes], np.float64))
    ends = to_sec(np.array([n.end for n in voice.notes], np.float64))
    timbre = None if voice.drum else timbres[family(voice.program)]
    for i, (note, t0, t1) in enumerate(zip(voice.notes, starts, ends), 1):
        if i % 256 == 0:
            bar.update(256)
        if note.duration <= 0 or t1 <= t0:
            continue
        gain = (max(1, min(127, note.velocity)) / 127.0) ** 1.5
        wave = _drum(note.pitch, sr) if voice.drum else _tone(timbre, note.pitch, t1 - t0, sr)
        i0 = int(round(t0 * sr))
        if i0 >= out.size:
            continue
        m = min(wave.size, out.size - i0)
        out[i0 : i0 + m] += gain * wave[:m]
    bar.update(len(voice.notes) % 256)


def _tick_to_seconds(piece: Piece):
    """Vectorised ticks -> seconds through the piece's tempo map (piecewise linear)."""
    ticks, secs, bpms = piece._segments()
    ticks_a = np.asarray(ticks, np.float64)
    secs_a = np.asarray(secs, np.float64)
    per_tick = 60.0 / (np.asarray(bpms, np.float64) * piece.tpq)

    def convert(t: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(ticks_a, t, side="right") - 1, 0, None)
        return secs_a[i] + (t - ticks_a[i]) * per_tick[i]

    return convert


def _envelope(tb: Timbre, dur: float, n: int, sr: int, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    att = max(tb.attack, 1.0 / sr)
    env = np.minimum(t / att, 1.0)
    if decay > 0:
        env = env * np.where(
            t < att, 1.0, tb.sustain + (1.0 - tb.sustain) * np.exp(-(t - att) / decay)
        )
    # release: linear fade from the level at note-off to zero over ``release`` seconds
    off = int(round(dur * sr))
    if off < n:
        rel_n = n - off
        env[off:] = env[min(off, n - 1)] * np.linspace(1.0, 0.0, rel_n, endpoint=False)
    return env


def _tone(tb: Timbre, pitch: int, dur: float, sr: int) -> np.ndarray:
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    n = int(math.ceil((dur + tb.release) * sr))
    t = np.arange(n) / sr
    decay = tb.decay * (2.0 ** (-(pitch - 60) / 24.0) if tb.pitch_decay else 1.0)
    # phase of the fundamental, with a vibrato that fades in over 0.3 s
    phase = 2 * np.pi * f0 * t
    if tb.vibrato > 0:
        depth = (2.0 ** (tb.vibrato / 12.0) - 1.0) * np.minimum(t / 0.3, 1.0)
        phase += depth * f0 / 5.5 * np.sin(2 * np.pi * 5.5 * t)
    ratios = np.asarray(tb.ratios)
    amps = np.asarray(tb.amps)
    keep = ratios * f0 < 0.45 * sr  # no partial above Nyquist (no aliasing)
    ratios, amps = ratios[keep], amps[keep]
    if ratios.size == 0:
        ratios, amps = np.array([1.0]), np.array([1.0])
    amps = amps / np.sqrt(np.sum(amps**2))  # equal loudness across timbres
    wave = _partials(ratios, amps, phase, t, tb.damping)
    if tb.detune > 0:
        c = 2.0 ** (tb.detune / 1200.0)
        wave = 0.6 * wave + 0.4 * _partials(ratios, amps, phase * c, t, tb.damping)
    if tb.noise > 0:
        rng = np.random.default_rng(pitch)
        wave = wave + tb.noise * rng.standard_normal(n)
    return wave * _envelope(tb, dur, n, sr, decay)


def _partials(ratios, amps, phase, t, damping: float) -> np.ndarray:
    """sum_k amps[k] * sin(ratios[k] * phase) * exp(-(ratios[k] - 1) * damping * t).

    When the ratios are whole multiples of a base (all harmonic timbres; the organ's base is a
    half), sin(m x) comes from the recurrence sin((m+1)x) = 2 cos(x) sin(mx) - sin((m-1)x):
    two multiply-adds per partial instead of a sine, which makes rendering several times faster.
    """
    base = 1.0 if np.all(ratios == np.round(ratios)) else 0.5
    mult = ratios / base
    if not np.all(mult == np.round(mult)) or mult.max() > 64:
        parts = np.sin(ratios[:, None] * phase[None, :])
        if damping > 0:
            parts *= np.exp(-np.outer((ratios - 1.0).clip(0) * damping, t))
        return amps @ parts
    want = {int(m): a for m, a in zip(mult, amps)}
    x = phase * base
    two_cos = 2.0 * np.cos(x)
    s_prev, s = np.zeros_like(x), np.sin(x)
    if damping > 0:
        step = np.exp(-base * damping * t)
        g = np.exp(-(base - 1.0) * damping * t) if base != 1.0 else np.ones_like(t)
    wave = np.zeros_like(x)
    for m in range(1, int(mult.max()) + 1):
        if m > 1:
            s_prev, s = s, two_cos * s - s_prev
            if damping > 0:
                g = g * step
        if m in want:
            wave += want[m] * (s * g if damping > 0 and m * base > 1.0 else s)
    return wave


_DRUM_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _drum(pitch: int, sr: int) -> np.ndarray:
    """A GM percussion sound (key map on channel 10), rendered the same way every time."""
    key = (pitch, sr)
    if key in _DRUM_CACHE:
        return _DRUM_CACHE[key]
    rng = np.random.default_rng(1000 + pitch)

    def noise(sec: float, tau: float, bright: bool) -> np.ndarray:
        n = int(sec * sr)
        x = rng.standard_normal(n)
        if bright:  # first difference: a crude high-pass for cymbals and hats
            x = np.diff(x, prepend=0.0) * 0.7
        return x * np.exp(-np.arange(n) / (tau * sr))

    def sweep(sec: float, f_hi: float, f_lo: float, tau: float) -> np.ndarray:
        t = np.arange(int(sec * sr)) / sr
        f = f_lo + (f_hi - f_lo) * np.exp(-t / 0.04)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / tau)

    if pitch in (35, 36):  # bass drum
        w = sweep(0.4, 160.0, 48.0, 0.12)
    elif pitch in (38, 40, 37, 39):  # snare, side stick, clap
        w = 0.6 * noise(0.25, 0.06, False) + 0.5 * sweep(0.25, 260.0, 180.0, 0.05)
    elif pitch in (42, 44):  # closed / pedal hi-hat
        w = noise(0.08, 0.018, True)
    elif pitch == 46:  # open hi-hat
        w = noise(0.4, 0.12, True)
    elif pitch in (49, 52, 55, 57):  # crash, china, splash
        w = noise(1.2, 0.45, True)
    elif pitch in (51, 53, 59):  # ride
        w = 0.5 * noise(0.8, 0.3, True) + 0.3 * sweep(0.8, 3200.0, 3200.0, 0.3)
    elif pitch in (41, 43, 45, 47, 48, 50):  # toms, low to high
        f = 80.0 * 2 ** ((pitch - 41) / 9.0)
        w = sweep(0.4, f * 1.6, f, 0.15)
    else:  # other percussion: a short band of noise whose colour follows the key
        w = 0.5 * noise(0.15, 0.04, pitch > 60) + 0.5 * sweep(0.15, 200 + 30 * (pitch - 27),
                                                              150 + 25 * (pitch - 27), 0.04)
    w = w / max(1e-9, float(np.max(np.abs(w))))
    _DRUM_CACHE[key] = w
    return w
