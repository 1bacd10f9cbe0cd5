"""The note model: tick/second conversion through the tempo map, bars, GM table."""

import pytest

from abcscribe.core import gm
from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice


def test_tpq_is_exact_for_triplets_and_64ths():
    assert TPQ % 3 == 0 and TPQ % 64 == 0
    assert (TPQ // 3) * 3 == TPQ  # a quarter-note triplet eighth is a whole number of ticks
    assert TPQ * 4 // 64 * 64 == TPQ * 4  # 1/64 note


def test_a_beat_is_three_of_the_denominators_notes_in_compound_metres():
    eighth, quarter = TPQ // 2, TPQ
    beats = {(m, d): Meter(0, m, d).beat_ticks for m, d in ((2, 4), (3, 4), (4, 4), (2, 2), (3, 8),
                                                            (6, 8), (9, 8), (12, 8), (6, 16))}
    assert beats == {(2, 4): quarter, (3, 4): quarter, (4, 4): quarter, (2, 2): 2 * quarter,
                     (3, 8): eighth, (6, 8): 3 * eighth, (9, 8): 3 * eighth, (12, 8): 3 * eighth,
                     (6, 16): 3 * eighth // 2}


def test_seconds_follow_the_tempo_map():
    p = Piece(voices=[Voice([Note(60, 0, TPQ)])], tempos=[Tempo(0, 120), Tempo(4 * TPQ, 60)])
    assert p.seconds(0) == 0
    assert p.seconds(4 * TPQ) == pytest.approx(2.0)  # 4 quarters at 120 BPM
    assert p.seconds(6 * TPQ) == pytest.approx(4.0)  # then 2 quarters at 60 BPM
    for t in (0, 100, 4 * TPQ, 5 * TPQ + 17):
        assert p.tick_at(p.seconds(t)) == pytest.approx(t)


def test_bar_starts_with_pickup_and_meter_change():
    notes = [Note(60, t, TPQ) for t in range(0, 20 * TPQ, TPQ)]
    p = Piece(voices=[Voice(notes)], meters=[Meter(0, 4, 4), Meter(9 * TPQ, 3, 4)], anacrusis=TPQ)
    bars = p.bar_starts()
    assert bars[:4] == [0, TPQ, 5 * TPQ, 9 * TPQ]
    assert bars[4:6] == [12 * TPQ, 15 * TPQ]  # 3/4 bars after the change


def test_chords_group_by_onset():
    v = Voice([Note(64, 0, TPQ), Note(60, 0, TPQ), Note(67, TPQ, TPQ)])
    assert v.chords() == [(0, (60, 64)), (TPQ, (67,))]


def test_gm_table():
    assert len(gm.PROGRAMS) == 128 and len(gm.FAMILIES) == 16
    assert gm.program_name(33) == "Electric Bass (finger)"
    assert gm.family_name(33) == "Bass"
    assert gm.program_number("electric bass (finger)") == 33
    assert gm.program_number("Violn") == 40  # close spelling
    assert gm.program_number("") is None
    assert gm.program_name(5, drum=True) == "Drum Kit"
