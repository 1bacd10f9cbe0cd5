"""core.midi: reading type 0/1 MIDI, quantizing, lead-in removal, writing, bad input."""

from __future__ import annotations

import io
import random
import time

import mido
import pytest

from abcscribe.core.errors import UserError
from abcscribe.core.gm import program_name
from abcscribe.core.midi import quantize, read_midi, read_midi_columns, write_midi
from abcscribe.core.notes import TPQ, Key, Meter, Note, Piece, Tempo, Voice


def midi_bytes(tracks, *, type=1, tpb=480) -> bytes:
    """A MIDI file from lists of mido messages with absolute times: (tick, message)."""
    mid = mido.MidiFile(type=type, ticks_per_beat=tpb)
    for events in tracks:
        tr = mido.MidiTrack()
        last = 0
        for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
            tr.append(msg.copy(time=tick - last))
            last = tick
        mid.tracks.append(tr)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def notes_on(ch, notes):
    """(start, length, pitch) triples in file ticks -> absolute-time note on/off events."""
    ev = []
    for start, length, pitch in notes:
        ev.append((start, mido.Message("note_on", channel=ch, note=pitch, velocity=90)))
        ev.append((start + length, mido.Message("note_off", channel=ch, note=pitch)))
    return ev


def starts(voice):
    return [(n.start, n.pitch) for n in voice.notes]


# ---- reading ------------------------------------------------------------------------------


def test_type0_channels_and_program_changes_become_voices():
    ev = [
        (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90))),
        (0, mido.MetaMessage("time_signature", numerator=6, denominator=8)),
        (0, mido.MetaMessage("key_signature", key="Em")),
        (0, mido.Message("program_change", channel=0, program=40)),  # violin
        (0, mido.Message("program_change", channel=1, program=32)),  # acoustic bass
    ]
    ev += notes_on(0, [(0, 240, 76), (240, 240, 79)])
    ev += [(480, mido.Message("program_change", channel=0, program=73))]  # then a flute
    ev += notes_on(0, [(480, 480, 81)])
    ev += notes_on(1, [(0, 960, 40)])
    ev += notes_on(9, [(0, 120, 36), (480, 120, 38)])
    p = read_midi(midi_bytes([ev], type=0))

    by_prog = {(v.program, v.drum): v for v in p.voices}
    assert set(by_prog) == {(40, False), (73, False), (32, False), (0, True)}
    assert starts(by_prog[40, False]) == [(0, 76), (480, 79)]
    assert starts(by_prog[73, False]) == [(960, 81)]
    assert [(n.start, n.duration) for n in by_prog[32, False].notes] == [(0, 1920)]
    assert starts(by_prog[0, True]) == [(0, 36), (960, 38)]
    assert p.tempos == [Tempo(0, 90.0)]
    assert p.meters == [Meter(0, 6, 8)]
    assert p.key == Key(fifths=1, mode="minor", tonic="E")


def test_type1_tracks_names_tempo_map_and_meter_changes():
    conductor = [
        (0, mido.MetaMessage("track_name", name="Reel for Two")),
        (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))),
        (0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
        (0, mido.MetaMessage("key_signature", key="D")),
        (1920, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60))),
        (1920, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
    ]
    fiddle = [(0, mido.MetaMessage("track_name", name="Fiddle")),
              (0, mido.Message("program_change", channel=0, program=110))]
    fiddle += notes_on(0, [(i * 240, 240, 62 + i % 5) for i in range(12)])
    piano = [(0, mido.MetaMessage("track_name", name="Piano"))]
    piano += notes_on(1, [(0, 1920, 50), (0, 1920, 57), (1920, 1440, 52)])
    p = read_midi(midi_bytes([conductor, fiddle, piano]))

    assert p.title == "Reel for Two"
    assert [(v.name, v.program) for v in p.voices] == [("Fiddle", 110), ("Piano", 0)]
    assert p.tempos == [Tempo(0, 120.0), Tempo(3840, 60.0)]
    assert p.meters == [Meter(0, 4, 4), Meter(3840, 3, 4)]
    assert p.key == Key(2, "major", "D")
    # one bar of 4/4 at 120 (2 s) then a 3/4 bar at 60 (3 s): the last note ends at 5 s
    assert p.seconds(p.voices[1].notes[-1].end) == pytest.approx(5.0)
    assert [n.pitch for n in p.voices[1].notes] == [50, 57, 52]


def test_tempo_changes_preserved_in_seconds():
    tempo_ev = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))]
    tempo_ev += [(480 * k, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100 + 7 * k)))
                 for k in range(1, 9)]
    notes = [(240 * i, 240, 60 + i % 12) for i in range(40)]
    data = midi_bytes([tempo_ev, notes_on(0, notes)])
    p = read_midi(data)
    # seconds of every onset as mido computes them from the file
    mid = mido.MidiFile(file=io.BytesIO(data))
    want, now = [], 0.0
    for msg in mid:
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            want.append(now)
    got = [p.seconds(n.start) for n in p.voices[0].notes]
    assert got == pytest.approx(want, abs=1e-4)
    assert len(p.tempos) == 9


def _music21_reference(score):
    """(onset ticks, midi pitch) per part, repeats expanded as music21's MIDI export does."""
    ex = score.expandRepeats()
    out = []
    for part in ex.parts:
        out.append(sorted(
            (int(round(float(n.getOffsetInHierarchy(part)) * TPQ)), p.midi)
            for n in part.stripTies().flatten().notes
            if n.duration.quarterLength > 0
            for p in n.pitches
        ))
    return out


@pytest.mark.parametrize("work", ["bach/bwv66.6", "bach/bwv269", "mozart/k156/movement4"])
def test_music21_scores_read_back_exactly(work, tmp_path):
    music21 = pytest.importorskip("music21")
    score = music21.corpus.parse(work)
    path = tmp_path / "score.mid"
    score.write("midi", fp=str(path))
    p = read_midi(path)
    ref = _music21_reference(score)
    assert len(p.voices) == len(ref) == len(score.parts)
    assert [v.name for v in p.voices] == [part.partName for part in score.parts]
    for voice, want in zip(p.voices, ref):
        assert sorted((n.start, n.pitch) for n in voice.notes) == want
    ts = score.recurse().getElementsByClass("TimeSignature").first()
    assert (p.meter.numerator, p.meter.denominator) == (ts.numerator, ts.denominator)


def test_columns_carry_the_same_notes_and_write_the_same_abc(tmp_path):
    """read_midi_columns + write_abc(notes=...) is the path midi2abc takes, without Note
    objects: the same notes, the same ABC (a key estimated from the notes included)."""
    from abcscribe.core.abc import write_abc

    music21 = pytest.importorskip("music21")
    path = tmp_path / "chorale.mid"
    music21.corpus.parse("bach/bwv66.6").write("midi", fp=str(path))
    rnd = random.Random(5)
    chords = [(i * 480 + rnd.randint(0, 20), 440, p) for i in range(64)
              for p in rnd.sample(range(48, 80), 3)]
    hihat = [(i * 240, 120, 42) for i in range(128)]
    performed = midi_bytes([notes_on(0, chords), notes_on(9, hihat)])
    for source in (path, performed):
        piece = read_midi(source)
        bare, columns = read_midi_columns(source)
        assert [v.name for v in bare.voices] == [v.name for v in piece.voices]
        assert all(v.notes == [] for v in bare.voices)
        for voice, (starts, pitches, lengths, vels) in zip(piece.voices, columns):
            assert [(n.start, n.pitch, n.duration, n.velocity) for n in voice.notes] == list(
                zip(starts, pitches, lengths, vels))
        for kw in ({}, {"layout": "interleaved", "key": "none"}):
            assert write_abc(bare, notes=columns, **kw) == write_abc(piece, **kw)
    assert piece.key is None  # the performed file has no key signature: estimated from notes


# ---- quantization and lead-in -------------------------------------------------------------


def _performed(notes, lead_in_ticks=0, jitter=0, seed=0, tpb=480):
    """Notes in file ticks, shifted by a constant lead-in, with random timing jitter."""
    rnd = random.Random(seed)
    out = []
    for start, length, pitch in notes:
        j = rnd.randint(-jitter, jitter)
        k = rnd.randint(-jitter, jitter)
        out.append((max(start + lead_in_ticks + j, 0), max(length - 20 + k, 10), pitch))
    return out


def _melody(n=64, seed=1):
    rnd = random.Random(seed)
    notes, t = [], 0
    for _ in range(n):
        d = rnd.choice([120, 240, 240, 480])
        notes.append((t, d, rnd.randint(60, 84)))
        t += d
    return notes


def test_offset_estimation_removes_constant_lead_in():
    tempo = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))]
    melody = _melody()
    clean = read_midi(midi_bytes([tempo, notes_on(0, melody)]))
    # 0.137 s of silence before the music (at 120 bpm, 480 tpb: 131.5 ticks), plus jitter
    late = _performed(melody, lead_in_ticks=131, jitter=12)
    p = read_midi(midi_bytes([tempo, notes_on(0, late)]))
    assert starts(p.voices[0]) == starts(clean.voices[0])
    # an explicit offset in seconds does the same
    q = read_midi(midi_bytes([tempo, notes_on(0, _performed(melody, 131))]), offset=131 / 960)
    assert starts(q.voices[0]) == starts(clean.voices[0])


def test_exact_file_with_lead_in_keeps_its_32nd_notes():
    # thirty-second notes (60 file ticks) a constant 0.3 s late: the lead-in goes, the 32nds stay
    notes = [(60 * i, 60, 60 + i % 12) for i in range(16)] + [(960, 480, 72), (1440, 480, 74)]
    tempo = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))]
    p = read_midi(midi_bytes([tempo, notes_on(0, [(s + 288, d, n) for s, d, n in notes])]))
    assert [(n.start, n.duration) for n in p.voices[0].notes] == [(2 * s, 2 * d) for s, d, _ in notes]


def test_abc2midi_style_timing_reads_back_exactly():
    # abc2midi starts every note a tick late and ends it two ticks early: still the same notes
    notes = [(60 * i, 60, 60 + i % 12) for i in range(8)] + [(480, 160, 67), (640, 160, 69),
                                                              (800, 160, 71), (960, 480, 72)]
    p = read_midi(midi_bytes([notes_on(0, [(s + 1, d - 2, n) for s, d, n in notes])]))
    assert [(n.start, n.duration) for n in p.voices[0].notes] == [(2 * s, 2 * d) for s, d, _ in notes]


def test_notated_file_is_not_shifted():
    # starts on an off-beat and is full of syncopation: still exact, so no lead-in is removed
    notes = [(240 + 720 * i, 240, 60 + i % 7) for i in range(20)]
    p = read_midi(midi_bytes([notes_on(0, notes)]))
    assert [n.start for n in p.voices[0].notes] == [2 * s for s, _, _ in notes]


def test_triplets_quantize_to_triplet_grid_straight_stays_straight():
    # beat 0: triplet eighths; beat 1: sixteenths; beat 2: triplet eighths; performed
    tpb = 480
    notes = [(0, 160, 60), (160, 160, 62), (320, 160, 64)]
    notes += [(480 + 120 * i, 120, 65 + i) for i in range(4)]
    notes += [(960, 160, 72), (1120, 160, 71), (1280, 160, 69), (1440, 480, 67)]
    p = read_midi(midi_bytes([notes_on(0, _performed(notes, jitter=10, seed=3))], tpb=tpb))
    got = [n.start for n in p.voices[0].notes]
    assert got == [0, 320, 640, 960, 1200, 1440, 1680, 1920, 2240, 2560, 2880]
    assert [n.duration for n in p.voices[0].notes[:3]] == [320, 320, 320]
    # without triplets everything lands on sixteenths
    flat = read_midi(midi_bytes([notes_on(0, _performed(notes, jitter=10, seed=3))]), triplets=False)
    assert all(n.start % 240 == 0 for n in flat.voices[0].notes)


def test_quantize_fixes_zero_length_and_same_pitch_overlaps():
    piece = Piece(voices=[Voice(notes=[
        Note(60, 0, 30),        # shorter than a sixteenth: becomes one
        Note(64, 950, 500),     # onset snaps to the beat
        Note(64, 965, 960),     # the same pitch again at the same place: one note remains
        Note(64, 1440, 960),    # overlaps the one before: that one is cut here
    ])])
    q = quantize(piece, grid=16)
    assert [(n.pitch, n.start, n.duration) for n in q.voices[0].notes] == [
        (60, 0, 240), (64, 960, 480), (64, 1440, 960)]


def test_quantize_drops_empty_voices_and_grid_none_keeps_raw_ticks():
    ev = notes_on(0, [(7, 100, 60), (301, 55, 62)])
    p = read_midi(midi_bytes([[], ev]), grid=None)
    assert [(n.start, n.duration) for n in p.voices[0].notes] == [(14, 200), (602, 110)]
    empty = quantize(Piece(voices=[Voice(), Voice(notes=[Note(60, 0, 960)])]))
    assert len(empty.voices) == 1


def test_bad_grid_is_a_user_error():
    with pytest.raises(UserError, match="grid"):
        quantize(Piece(voices=[Voice(notes=[Note(60, 0, 960)])]), grid=7)


# ---- writing ------------------------------------------------------------------------------


def random_piece(seed: int) -> Piece:
    rnd = random.Random(seed)
    voices = []
    for k in range(rnd.randint(1, 5)):
        drum = k == 2
        notes, t = [], rnd.choice([0, 240, 960])
        for _ in range(rnd.randint(1, 40)):
            d = rnd.choice([240, 480, 720, 960, 320 * 3])
            for pitch in rnd.sample(range(35, 90), rnd.choice([1, 1, 2, 3])):
                notes.append(Note(pitch, t, d, rnd.randint(1, 127)))
            t += d + rnd.choice([0, 0, 240])
        voices.append(Voice(notes=notes, program=0 if drum else rnd.randrange(128),
                            name=rnd.choice(["", "Lead", "Strings"]), drum=drum))
    for v in voices:
        v.sort()
    return Piece(
        voices=voices,
        tempos=[Tempo(0, rnd.choice([60.0, 96.0, 132.5]))] + [Tempo(3840, 80.0)] * rnd.randint(0, 1),
        meters=[Meter(0, *rnd.choice([(4, 4), (3, 4), (6, 8)]))],
        key=rnd.choice([None, Key(-3, "minor", "C"), Key(4, "major", "E")]),
        title=rnd.choice(["", "A Tune"]),
    )


@pytest.mark.parametrize("seed", range(12))
def test_write_then_read_gives_the_same_piece(seed, tmp_path):
    piece = random_piece(seed)
    path = tmp_path / "out.mid"
    data = write_midi(piece, path)
    assert path.read_bytes() == data
    back = read_midi(path)
    want = piece.copy()
    for v, b in zip(want.voices, back.voices):
        v.name = v.name or program_name(v.program, v.drum)  # unnamed voices get GM names
    assert back == want


def test_written_file_layout():
    piece = Piece(voices=[Voice(notes=[Note(60, 0, 960)], program=40),
                          Voice(notes=[Note(36, 0, 240)], drum=True),
                          Voice(notes=[Note(48, 0, 960)], program=32)])
    mid = mido.MidiFile(file=io.BytesIO(write_midi(piece)))
    assert mid.type == 1 and len(mid.tracks) == 4
    chans = [{m.channel for m in t if hasattr(m, "channel")} for t in mid.tracks[1:]]
    assert chans == [{0}, {9}, {1}]
    names = [[m.name for m in t if m.type == "track_name"] for t in mid.tracks[1:]]
    assert names == [["Violin"], ["Drum Kit"], ["Acoustic Bass"]]
    progs = [[m.program for m in t if m.type == "program_change"] for t in mid.tracks[1:]]
    assert progs == [[40], [], [32]]


# ---- bad input ----------------------------------------------------------------------------


def _bad_inputs():
    good = midi_bytes([notes_on(0, _melody(200))])
    rnd = random.Random(7)
    yield "empty", b""
    yield "text", b"X:1\nT:not midi\nK:C\nabc|\n"
    yield "header only", good[:14]
    for i in range(30):
        yield f"truncated {i}", good[: rnd.randrange(1, len(good) - 1)]
    for i in range(30):
        yield f"random {i}", bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400)))
    for i in range(30):
        yield f"MThd+random {i}", b"MThd" + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200)))


def test_corrupt_truncated_random_and_empty_input_are_user_errors(tmp_path):
    t0 = time.monotonic()
    refused = 0
    for label, data in _bad_inputs():
        path = tmp_path / "bad.mid"
        path.write_bytes(data)
        try:
            read_midi(path)  # anything but a UserError (or a hang) fails the test
        except UserError as e:
            assert str(path) in str(e), label
            refused += 1
    # a truncation may fall inside the final end-of-track padding; nearly all must be refused
    assert refused >= 90
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"RIFF....WAVEfmt ", "not a MIDI file"), (b"MThd\x00\x00", "corrupt"),
])
def test_user_error_names_file_and_reason(tmp_path, data, reason):
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    with pytest.raises(UserError, match=reason) as err:
        read_midi(path)
    assert str(path) in str(err.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_midi(tmp_path / "nope.mid")


# ---- the pickup bar found from the notes ---------------------------------------------------
def _tune(meter, upbeat, bar_pattern, bars=8, voices=1):
    """A piece in ``meter``: an upbeat of ``upbeat`` ticks (one note), then ``bars`` bars of
    ``bar_pattern`` (note lengths in ticks), the last bar short by the upbeat (as notated)."""
    num, den = meter
    bar = num * TPQ * 4 // den
    notes = [Note(67, 0, upbeat)] if upbeat else []
    t = upbeat
    for b in range(bars):
        for d in bar_pattern:
            if b == bars - 1 and t + d > upbeat + bars * bar - upbeat:
                break
            notes.append(Note(60 + (t // 240) % 12, t, d))
            t += d
    return Piece(voices=[Voice(notes=list(notes)) for _ in range(voices)],
                 meters=[Meter(0, num, den)])


@pytest.mark.parametrize("meter, upbeat, pattern", [
    ((4, 4), TPQ, [2 * TPQ, TPQ, TPQ]),  # a chorale's beat of upbeat; half notes on beat 1
    ((4, 4), TPQ, [TPQ, TPQ, 2 * TPQ]),  # ... or on beat 3: still bar lines after one beat
    ((3, 4), TPQ, [2 * TPQ, TPQ]),  # a waltz
    ((2, 4), TPQ // 2, [TPQ, TPQ // 2, TPQ // 2]),  # a reel's eighth upbeat
    ((6, 8), TPQ // 2, [TPQ, TPQ // 2, TPQ, TPQ // 2]),  # a jig's
])
def test_find_pickup_puts_the_bar_lines_where_the_long_notes_start(meter, upbeat, pattern):
    from abcscribe.core.midi import find_pickup

    assert find_pickup(_tune(meter, upbeat, pattern, voices=2)) == upbeat
    # no upbeat: none invented
    assert find_pickup(_tune(meter, 0, pattern, voices=2)) == 0


def test_find_pickup_follows_a_later_meter_change_and_ignores_drums():
    from abcscribe.core.midi import find_pickup

    piece = _tune((4, 4), TPQ, [2 * TPQ, TPQ, TPQ])
    piece.voices[0].drum = True
    assert find_pickup(piece) == 0  # only drums: nothing to go by
    changed = _tune((4, 4), 0, [TPQ] * 4)
    changed.meters.append(Meter(2 * TPQ + 4 * TPQ * 2, 3, 4))  # 3/4 from beat 10
    assert find_pickup(changed) == 2 * TPQ
