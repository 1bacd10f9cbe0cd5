"""Reading performances: the sustain pedal on note lengths, beats tracked from note onsets."""

from __future__ import annotations

import math
import random

import mido
import numpy as np
import pytest

from abcscribe.core.beats import beat_tempo_map, retime, seconds_piece, track_beats
from abcscribe.core.midi import apply_sustain, read_midi
from abcscribe.core.notes import TPQ, Note, Voice


def test_sustain_holds_released_keys_until_the_pedal_comes_up():
    start = np.array([0.0, 100.0, 300.0, 900.0])
    end = np.array([50.0, 150.0, 350.0, 950.0])
    pitch = np.array([60, 64, 60, 67])
    # pedal down 40..400, up; down again 920 and never up
    times, values = np.array([40.0, 400.0, 920.0]), np.array([127, 0, 100])
    got = apply_sustain(start, end, pitch, times, values)
    # 60 is struck again at 300 (stops there), 64 held to 400, the second 60 to 400,
    # 67 released at 950 under a pedal that stays down: held to the end
    assert got.tolist() == [300.0, 400.0, 400.0, 950.0]
    assert apply_sustain(start, end, pitch, np.zeros(0), np.zeros(0, int)).tolist() == end.tolist()
    # a pedal value below 64 is up; repeated values change nothing
    got = apply_sustain(start[:2], end[:2], pitch[:2], np.array([10.0, 20.0, 120.0]),
                        np.array([30, 127, 127]))
    assert got.tolist() == [150.0, 150.0]


def test_read_midi_applies_the_sustain_pedal_only_when_asked(tmp_path):
    m = mido.MidiFile(type=0, ticks_per_beat=384)
    t = mido.MidiTrack()
    m.tracks.append(t)
    for msg in (mido.Message("control_change", control=64, value=127, time=0),
                mido.Message("note_on", note=60, velocity=80, time=0),
                mido.Message("note_on", note=60, velocity=0, time=96),  # released after 1/4 beat
                mido.Message("control_change", control=67, value=80, time=96),  # soft: ignored
                mido.Message("control_change", control=64, value=0, time=576)):  # up at beat 2
        t.append(msg)
    m.save(tmp_path / "p.midi")
    plain = read_midi(tmp_path / "p.midi", grid=None, offset=0.0)
    pedal = read_midi(tmp_path / "p.midi", grid=None, offset=0.0, sustain=True)
    assert plain.voices[0].notes[0].duration == TPQ // 4
    assert pedal.voices[0].notes[0].duration == 2 * TPQ


def played(bpm: float, beats: int = 40, start: float = 0.37, seed: int = 0):
    """Onsets of a performance: a note on every beat, an eighth between on odd beats, rubato."""
    rng = random.Random(seed)
    t, notes = start, []
    for b in range(beats):
        period = 60.0 / bpm * (1 + 0.03 * math.sin(b / 5))
        notes.append(Note(rng.randrange(50, 80), int((t + rng.gauss(0, 0.01)) * TPQ), TPQ // 3, 90))
        if b % 2:
            notes.append(Note(rng.randrange(50, 80), int((t + period / 2) * TPQ), TPQ // 3, 60))
        t += period
    return notes


@pytest.mark.parametrize("bpm", [76, 96, 130])
def test_tracked_beats_follow_the_played_tempo(bpm):
    notes = played(bpm)
    beats = track_beats(np.array([n.start / TPQ for n in notes]), np.array([n.velocity for n in notes]))
    assert np.median(np.diff(beats)) == pytest.approx(60.0 / bpm, rel=0.05)
    # every beat among the notes falls on a played beat note (within 40 ms)
    on_beat = np.array([n.start / TPQ for n in notes if n.velocity == 90])
    inside = beats[beats <= on_beat[-1] + 0.04]
    assert len(inside) >= len(on_beat) - 1
    assert all(np.abs(on_beat - b).min() < 0.04 for b in inside)


def test_retimed_piece_keeps_every_note_where_it_sounds():
    notes = played(84)
    piece = retime(seconds_piece([Voice(notes=notes)]))
    assert (piece.meter.numerator, piece.meter.denominator) == (1, 4)
    assert 0 < piece.anacrusis < TPQ and piece.anacrusis % (TPQ // 4) == 0
    for a, b in zip(notes, sorted(piece.voices[0].notes, key=lambda n: n.start)):
        assert piece.seconds(b.start) == pytest.approx(a.start / TPQ, abs=0.01)
    assert retime(seconds_piece([Voice(notes=notes[:5])])) is None  # too few to tell


def test_tempo_runs_end_on_tracked_beats():
    beats = np.array([0.5, 1.0, 1.5, 2.0, 2.6, 3.2, 3.8])
    tempos, pickup = beat_tempo_map(beats)
    assert pickup == 0  # a whole beat of lead-in becomes a first beat, no pickup
    assert [round(t.bpm) for t in tempos] == [120, 100]
    assert [t.tick for t in tempos] == [0, 4 * TPQ]


def test_vectorized_time_conversions_agree_with_the_piece():
    from abcscribe.core.beats import to_seconds, to_ticks
    from abcscribe.core.notes import Piece, Tempo

    piece = Piece(tempos=[Tempo(0, 90.0), Tempo(1920, 132.5), Tempo(5000, 60.0)])
    ticks = np.array([0.0, 1.0, 1919.5, 1920.0, 4999.0, 5000.0, 12345.6])
    assert to_seconds(piece, ticks) == pytest.approx([piece.seconds(t) for t in ticks])
    secs = np.array([0.0, 0.5, 1.3333, 2.0, 7.7, 100.0])
    assert to_ticks(piece, secs) == pytest.approx([piece.tick_at(s) for s in secs])
