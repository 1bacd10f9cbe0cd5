"""What midi2abc writes for a reader of the score: voice names from track names, clefs from
range, the pickup bar found from the notes, meter changes in every voice, warnings for flawed
files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mido

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import need_tool  # noqa: E402

from abcscribe.core.abc import read_abc  # noqa: E402


def midi_file(path, tracks, meters=((0, 4, 4),), tpb=480):
    """A type 1 file: ``tracks`` is [(name, program, [(start beat, beats, pitch)])]."""
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    cond = mido.MidiTrack()
    last = 0
    for beat, num, den in meters:
        t = int(beat * tpb)
        cond.append(mido.MetaMessage("time_signature", numerator=num, denominator=den,
                                     time=t - last))
        last = t
    mid.tracks.append(cond)
    for ch, (name, program, notes) in enumerate(tracks):
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=name))
        tr.append(mido.Message("program_change", channel=ch, program=program))
        events = []
        for start, beats, pitch in notes:
            events.append((int(start * tpb), 1, pitch))
            events.append((int((start + beats) * tpb), 0, pitch))
        events.sort(key=lambda e: (e[0], e[1]))
        last = 0
        for t, on, pitch in events:
            kind = "note_on" if on else "note_off"
            tr.append(mido.Message(kind, channel=ch, note=pitch, velocity=80 if on else 0,
                                   time=t - last))
            last = t
        mid.tracks.append(tr)
    mid.save(path)
    return path


def waltz(pickup=True):
    """3/4: an upbeat, then a long note on every downbeat and a short one after it."""
    notes = [(0, 1, 67)] if pickup else []
    t = 1 if pickup else 0
    for bar in range(8):
        notes += [(t + 3 * bar, 2, 72 - bar % 3), (t + 3 * bar + 2, 1, 74)]
    bass = [(t + 3 * bar, 3, 43 + bar % 2) for bar in range(8)]
    return [("Melody", 73, notes), ("Basso", 32, bass)]


def test_names_clefs_and_programs(cli, tmp_path):
    mid = midi_file(tmp_path / "w.mid", waltz(), meters=((0, 3, 4),))
    abc = cli("midi2abc", mid, check=True).stdout
    assert re.findall(r"^V:.*$", abc, re.M) == ['V:1 name="Melody"', 'V:2 name="Basso" clef=bass']
    assert "%%MIDI program 73" in abc and "%%MIDI program 32" in abc
    piece, _ = read_abc(abc)
    assert [(v.name, v.program) for v in piece.voices] == [("Melody", 73), ("Basso", 32)]


def test_the_pickup_bar_is_found_from_the_notes(cli, tmp_path):
    mid = midi_file(tmp_path / "w.mid", waltz(), meters=((0, 3, 4),))
    abc = cli("midi2abc", mid, "--unit", "1/4", check=True).stdout
    melody = abc.split('V:1 name="Melody"')[1].splitlines()[2]
    assert melody.startswith("G | c2 d | B2 d |")
    plain = cli("midi2abc", mid, "--unit", "1/4", "--no-pickup", check=True).stdout
    assert plain.split('V:1 name="Melody"')[1].splitlines()[2].startswith("G c2 | d B2 |")
    # without an upbeat, no pickup is invented
    straight = midi_file(tmp_path / "s.mid", waltz(pickup=False), meters=((0, 3, 4),))
    abc = cli("midi2abc", straight, "--unit", "1/4", check=True).stdout
    assert abc.split('V:1 name="Melody"')[1].splitlines()[2].startswith("c2 d | B2 d |")
    for text in (abc, plain):
        back, _ = read_abc(text)
        assert sum(len(v.notes) for v in back.voices) == 8 * 3 + (0 if text is abc else 1)


def test_a_meter_change_tells_the_bar_lines_and_every_voice_carries_it(cli, tmp_path):
    # two beats of pickup in 4/4, then 3/4 from beat 10: bar lines at 2, 6, 10, 13, ...
    notes = [(b, 1, 60 + b % 5) for b in range(16)]
    mid = midi_file(tmp_path / "m.mid", [("A", 0, notes), ("B", 0, notes)],
                    meters=((0, 4, 4), (10, 3, 4)))
    abc = cli("midi2abc", mid, "--unit", "1/4", check=True).stdout
    for voice in abc.split("\nV:")[1:]:
        music = voice.splitlines()[2]
        assert re.match(r"(\[M:4/4\] )?[A-Ga-g^_=]+ [A-Ga-g^_=]+ \|", music), music
        assert "[M:3/4]" in voice
    assert "[M:4/4]" in abc.split("\nV:")[2]  # the second voice starts in the first meter
    need_tool("abc2abc")
    out = subprocess.run(["abc2abc", "-", "-V", "2"], input=abc, capture_output=True,
                         text=True)
    # the 3/4 of voice 1 does not leak into voice 2 (abc2abc still counts a pickup bar in any
    # voice but the first as short: "Bar 5 is 1/2 not 4/4")
    errors = re.findall(r"%Error : (.*)", out.stdout + out.stderr)
    assert errors == ["Bar 5 is 1/2 not 4/4"], errors


def test_overlapping_notes_of_a_track_share_a_staff_and_come_back_as_one_voice(cli, tmp_path):
    held = [(0, 8, 48), (0, 1, 64), (1, 1, 65), (2, 2, 67), (4, 4, 72), (5, 1, 60)]
    mid = midi_file(tmp_path / "o.mid", [("Piano", 0, held)])
    abc = cli("midi2abc", mid, check=True).stdout
    assert "%%score (1 2 3)" in abc
    assert not re.search(r"\[[^\]]*-[^\]]*\]", abc)  # no chord with tied notes inside
    piece, _ = read_abc(abc)
    assert len(piece.voices) == 1 and len(piece.voices[0].notes) == len(held)


def test_a_note_on_without_its_note_off_is_named_in_a_warning(cli, tmp_path):
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr.append(mido.Message("note_on", note=60, velocity=80, time=0))  # never switched off
    for i in range(8):
        tr.append(mido.Message("note_on", note=64 + i % 3, velocity=80, time=0 if i else 480))
        tr.append(mido.Message("note_off", note=64 + i % 3, velocity=0, time=480))
    tr.append(mido.Message("note_on", note=60, velocity=80, time=0))
    tr.append(mido.Message("note_off", note=60, velocity=0, time=960))  # read as the first's
    tr.append(mido.Message("note_off", note=60, velocity=0, time=960))
    mid.tracks.append(tr)
    mid.save(tmp_path / "flawed.mid")
    proc = cli("midi2abc", tmp_path / "flawed.mid", check=True)
    assert "flawed.mid" in proc.stderr and "note-offs" in proc.stderr
    clean = cli("midi2abc", midi_file(tmp_path / "w.mid", waltz()), check=True)
    assert "warning" not in clean.stderr
