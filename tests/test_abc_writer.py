"""The ABC writer: standard ABC 2.1 that keeps every note exact, read back by our own reader."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abcscribe.core.abc import read_abc, write_abc
from abcscribe.core.notes import Key, Meter, Note, Piece, Tempo, Voice

Q = 960  # ticks per quarter
S = Q // 4  # a sixteenth


def notes_of(voice):
    return sorted((n.start, n.pitch, n.duration) for n in voice.notes)


def assert_same_notes(a: Piece, b: Piece):
    assert len(a.voices) == len(b.voices)
    for va, vb in zip(a.voices, b.voices):
        assert notes_of(va) == notes_of(vb)
        assert va.drum == vb.drum
        if not va.drum:
            assert va.program == vb.program


def melody(pitches, dur=S * 2, start=0, **kw):
    return Voice([Note(p, start + i * dur, dur) for i, p in enumerate(pitches)], **kw)


def test_header_names_instruments_and_midi_programs():
    piece = Piece(
        [melody([67, 69, 71, 72], program=40), Voice([Note(36, 0, S), Note(42, S * 2, S)],
                                                     drum=True)],
        tempos=[Tempo(0, 96)], meters=[Meter(0, 3, 4)], key=Key(1, "major", "G"), title="Air",
    )
    abc = write_abc(piece, x=7)
    head = abc.split("V:")[0]
    assert head.splitlines() == ["X:7", "T:Air", "M:3/4", "L:1/16", "Q:1/4=96", "K:G"]
    assert 'V:1 name="Violin"\n%%MIDI program 40' in abc
    assert 'V:2 name="Drum Kit"\n%%MIDI channel 10' in abc
    back, warnings = read_abc(abc)
    assert warnings == []
    assert_same_notes(piece, back)
    assert back.bpm == 96 and (back.meter.numerator, back.meter.denominator) == (3, 4)
    assert back.title == "Air"


def test_long_notes_are_split_at_bar_lines_and_tied():
    piece = Piece([Voice([Note(60, S * 12, S * 8), Note(62, S * 20, Q * 9)])])
    abc = write_abc(piece)
    assert "C4- | C4" in abc  # a half note across the first bar line
    assert abc.count("|") >= 4
    assert_same_notes(piece, read_abc(abc)[0])


def test_accidentals_follow_key_signature_and_bar():
    # G major: F# needs no sign; F natural needs '=' and lasts to the end of the bar
    piece = Piece([melody([66, 65, 65, 66, 67, 66, 64, 62, 66, 65])], key=Key(1, "major", "G"))
    abc = write_abc(piece)
    body = abc.split("%%MIDI program 0\n")[1]
    assert body.startswith("F2=F2 F2^F2 G2F2 E2D2 | F2=F2")  # the bar line cancels the natural
    assert_same_notes(piece, read_abc(abc)[0])
    explicit = write_abc(piece, key="none")
    assert "K:none" in explicit and "^F2=F2" in explicit
    assert_same_notes(piece, read_abc(explicit)[0])


def test_key_is_estimated_when_the_piece_has_none():
    a_minor = [69, 71, 72, 74, 76, 72, 71, 68, 69, 64, 69, 69]
    abc = write_abc(Piece([melody(a_minor)]))
    assert re.search(r"^K:Am$", abc, re.M)
    e_flat = [63, 67, 70, 75, 70, 67, 63, 68, 72, 63]
    assert re.search(r"^K:Eb$", write_abc(Piece([melody(e_flat)])), re.M)


def test_octave_marks():
    piece = Piece([melody([36, 48, 60, 72, 84, 96], dur=Q)])
    abc = write_abc(piece, key="C")
    assert "C,,4 C,4 C4 c4 | c'4 c''4 z8 |]" in abc
    assert_same_notes(piece, read_abc(abc)[0])


def test_triplets_are_written_as_tuplets_and_stay_exact():
    t = Q // 3
    notes = [Note(p, i * t, t) for i, p in enumerate((60, 62, 64))] + [Note(65, Q, Q)]
    piece = Piece([Voice(notes)])
    abc = write_abc(piece)
    assert "(3C2D2E2 F4" in abc
    assert_same_notes(piece, read_abc(abc)[0])
    # half-note triplets span two beats
    notes = [Note(p, i * 2 * t, 2 * t) for i, p in enumerate((60, 62, 64))]
    notes.append(Note(65, 2 * Q, 2 * Q))
    piece = Piece([Voice(notes)])
    abc = write_abc(piece)
    assert "(3C4D4E4" in abc
    assert_same_notes(piece, read_abc(abc)[0])


def test_overlapping_notes_in_one_voice_become_voices_on_one_staff():
    # a held bass under a moving line, and a chord whose notes end at different times
    v = Voice([Note(48, 0, Q * 4), Note(64, 0, Q), Note(67, 0, Q * 2), Note(65, Q, Q),
               Note(64, Q * 2, Q * 2)])
    piece = Piece([v])
    abc = write_abc(piece)
    # no chords tied across their own notes: the held notes are voices sharing one staff
    assert "-" not in abc.split("K:")[1]
    assert "%%score (1 2 3)" in abc  # one staff
    assert re.findall(r"^V:\d+.*$", abc, re.M) == [
        'V:1 name="Acoustic Grand Piano"', "V:2", "V:3"]
    assert_same_notes(piece, read_abc(abc)[0])  # read back as the one voice it was


def test_pickup_bar_meter_and_tempo_changes():
    bar = Q * 3
    notes = [Note(67, 0, Q)] + [Note(60 + (i % 5), Q + i * Q, Q) for i in range(9)]
    piece = Piece(
        [Voice(notes, program=73)],
        meters=[Meter(0, 3, 4), Meter(Q + 2 * bar, 2, 4)],
        tempos=[Tempo(0, 100), Tempo(Q + bar, 80)],
        anacrusis=Q,
    )
    abc = write_abc(piece, bars_per_line=8)
    line = abc.strip().splitlines()[-1]
    assert line.startswith("G4 | C4")  # the one-beat pickup bar
    assert "[Q:1/4=80]" in abc and "[M:2/4]" in abc
    back, warnings = read_abc(abc)
    assert warnings == []
    assert_same_notes(piece, back)
    assert back.anacrusis == Q
    assert [(t.tick, t.bpm) for t in back.tempos] == [(0, 100), (Q + bar, 80)]
    assert [(m.tick, m.numerator, m.denominator) for m in back.meters] == [
        (0, 3, 4), (Q + 2 * bar, 2, 4)]


def test_interleaved_layout_writes_voices_bar_group_by_bar_group():
    piece = Piece([melody(range(60, 92), program=0), melody(range(36, 68), program=32)])
    abc = write_abc(piece, layout="interleaved", bars_per_line=2)
    lines = abc.splitlines()
    music = [ln for ln in lines if ln.startswith("[V:")]
    assert [ln[:5] for ln in music] == ["[V:1]", "[V:2]", "[V:1]", "[V:2]"]
    assert music[-1].endswith("|]")
    assert_same_notes(piece, read_abc(abc)[0])


def test_non_integral_tempo_uses_an_exact_beat_unit():
    piece = Piece([melody([60])], tempos=[Tempo(0, 100.5)])
    abc = write_abc(piece)
    assert "Q:1/8=201" in abc
    assert read_abc(abc)[0].bpm == 100.5


def test_thousands_of_overlapping_notes_come_back_exactly():
    # notes of 1-3 sixteenths every sixteenth: each voice overlaps itself throughout
    # (the writer's speed is examples/bench/midi2abc.py's)
    voices = [Voice([Note(40 + (i * 7 + k) % 40, i * S, S * (1 + i % 3)) for i in range(3000)],
                    program=k) for k in range(4)]
    piece = Piece(voices)
    abc = write_abc(piece)
    assert abc.count("\nV:") > 4  # the layers
    assert_same_notes(piece, read_abc(abc)[0])


# ---- property: reader(writer(piece)) == piece ---------------------------------------------
STEPS = (60, 80, 120, 160, 240, 320, 480)
METERS = ((4, 4), (3, 4), (6, 8), (2, 4), (5, 4), (7, 8), (2, 2), (9, 8))


@st.composite
def pieces(draw):
    num, den = draw(st.sampled_from(METERS))
    bar = num * Q * 4 // den
    nvoices = draw(st.integers(1, 3))
    voices = []
    for _ in range(nvoices):
        drum = draw(st.booleans()) and draw(st.booleans())
        step = draw(st.sampled_from(STEPS))
        raw = draw(st.lists(
            st.tuples(st.integers(0, 48), st.integers(1, 16), st.integers(0 if not drum else 35,
                                                                          127 if not drum else 81)),
            min_size=1, max_size=30))
        notes = []
        for k, d, p in raw:
            s, dur = k * step, d * step
            if any(n.pitch == p and n.start < s + dur and s < n.end for n in notes):
                continue  # one sounding note per pitch and voice, as in MIDI
            notes.append(Note(p, s, dur))
        voices.append(Voice(notes, program=0 if drum else draw(st.integers(0, 127)), drum=drum))
    end = max(n.end for v in voices for n in v.notes)
    meters = [Meter(0, num, den)]
    if draw(st.booleans()) and end > 2 * bar:
        n2, d2 = draw(st.sampled_from([m for m in METERS if m != (num, den)]))
        meters.append(Meter(bar * draw(st.integers(1, max(1, end // bar - 1))), n2, d2))
    tempos = [Tempo(0, draw(st.integers(30, 240)))]
    if draw(st.booleans()) and end > 2 * S:
        tempos.append(Tempo(draw(st.integers(1, end // S - 1)) * S,
                            tempos[0].bpm + draw(st.integers(1, 60))))
    key = draw(st.one_of(st.none(), st.builds(
        lambda f, m: Key(f, m, ""), st.integers(-7, 7), st.sampled_from(["major", "minor"]))))
    return Piece(voices, tempos=tempos, meters=meters, key=key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces(), st.sampled_from(["voices", "interleaved"]),
       st.sampled_from([None, "none", "Bb", "F#m"]), st.integers(1, 5))
def test_reading_what_the_writer_wrote_gives_the_piece_back(piece, layout, key, bpl):
    abc = write_abc(piece, layout=layout, key=key, bars_per_line=bpl)
    back, warnings = read_abc(abc)
    assert warnings == []
    assert_same_notes(piece, back)
    assert [(t.tick, t.bpm) for t in back.tempos] == [(t.tick, t.bpm) for t in piece.tempos]
    assert [(m.tick, m.numerator, m.denominator) for m in back.meters] == [
        (m.tick, m.numerator, m.denominator) for m in piece.meters]
