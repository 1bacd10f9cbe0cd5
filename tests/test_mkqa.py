"""mkqa: recordings paired with scores become Q&A JSONL clips.

Each test builds miniature copies of the dataset layouts (a few bars per piece, audio rendered
with core.audio.render), runs ``abcscribe mkqa`` as a user does, and checks the records against
the pieces it built: the clip's ABC holds exactly the notes sounding in the clip, the audio at
offset/duration sounds where those notes do and is quiet in the rests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from abcscribe.core.abc import read_abc, write_abc
from abcscribe.core.audio import load_audio, render, write_audio
from abcscribe.core.midi import write_midi
from abcscribe.core.notes import TPQ, Key, Meter, Note, Piece, Tempo, Voice
from abcscribe.core.qa import clip_piece, slice_piece, split_of

SR = 22050


# ---- building pieces and layouts -------------------------------------------------------------


def tune(seed: int, beats: int = 3, bpm: float = 100.0, bars: int = 6, programs=(73,),
         key: Key | None = Key(1, "major", "G"), tempo_change: float | None = None) -> Piece:
    """A small tune: in each bar the last beat is a rest, except that bar 1's last beat holds
    a note tied over the bar line into bar 2. A second voice (when two programs are given)
    plays long low notes in bars 0-1 only, so later clips have one voice."""
    rng = random.Random(seed)
    bar = beats * TPQ
    melody = []
    for b in range(bars):
        t = b * bar + (TPQ if b == 2 else 0)  # bar 2 begins under the tied note
        while t < b * bar + (beats - 1) * TPQ:
            d = min(rng.choice((TPQ, TPQ // 2)), b * bar + (beats - 1) * TPQ - t)
            melody.append(Note(rng.randrange(67, 84), t, d))
            t += d
        if b == 1:
            melody.append(Note(rng.randrange(67, 84), t, 2 * TPQ))  # crosses into bar 2
    voices = [Voice(notes=melody, program=programs[0])]
    if len(programs) > 1:
        bass = [Note(rng.randrange(43, 55), b * bar, (beats - 1) * TPQ) for b in range(2)]
        voices.append(Voice(notes=bass, program=programs[1]))
    tempos = [Tempo(0, bpm)]
    if tempo_change:
        tempos.append(Tempo(3 * bar, tempo_change))
    return Piece(voices=voices, tempos=tempos, meters=[Meter(0, beats, 4)], key=key)


def save_audio(piece: Piece, path: Path) -> None:
    write_audio(path, render(piece, sr=SR), SR)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Every layout in miniature, and the pieces behind them by piece id."""
    root = tmp_path_factory.mktemp("mkqa")
    pieces: dict[str, Piece] = {}
    names: dict[str, list[str]] = {}

    # a folder pairing by stem: a sub-folder, FLAC, ABC as the score, and separate folders
    pairs = root / "pairs"
    jig = tune(1, beats=3, programs=(73, 42))
    write_midi(jig, pairs / "irish" / "jig.mid")
    save_audio(jig, pairs / "irish" / "jig.wav")
    reel = tune(2, beats=4, bpm=120, programs=(40,), key=Key(-1, "minor", "D"), tempo_change=150)
    write_midi(reel, pairs / "reel.mid")
    save_audio(reel, pairs / "reel.flac")
    air = tune(3, beats=2, programs=(0,), key=None)
    (pairs / "air.abc").write_text(write_abc(air, key="none"))  # K:none
    save_audio(air, pairs / "air.wav")
    hop = tune(4, beats=4, programs=(24,))
    write_midi(hop, pairs / "midi" / "hop.mid")
    save_audio(hop, pairs / "audio" / "hop.wav")
    pieces.update({"irish/jig": jig, "reel": reel, "air": air, "midi/hop": hop})
    names.update({"irish/jig": ["Flute", "Cello"], "reel": ["Violin"],
                  "air": ["Acoustic Grand Piano"], "midi/hop": ["Acoustic Guitar (nylon)"]})

    # URMP without its Notes_*.txt: notes from the score (with a warning), instruments from
    # the folder name, whatever the score's programs say (URMP as it really is, Slakh2100 and
    # MAESTRO: test_mkqa_datasets.py)
    d = root / "urmp" / "01_Jupiter_vn_vc"
    jup = tune(5, beats=4, programs=(0, 0))
    write_midi(jup, d / "Sco_01_Jupiter_vn_vc.mid")
    save_audio(tune(5, beats=4, programs=(40, 42)), d / "AuMix_01_Jupiter_vn_vc.wav")
    (d / "AuSep_1_vn_01_Jupiter.wav").write_bytes(b"")  # other URMP files are ignored
    pieces["01_Jupiter_vn_vc"], names["01_Jupiter_vn_vc"] = jup, ["Violin", "Cello"]

    # a manifest: paths relative to it, instruments by GM name
    man = root / "manifest"
    fl = tune(8, beats=4, programs=(0,))
    write_midi(fl, man / "scores" / "flute.mid")
    save_audio(tune(8, beats=4, programs=(73,)), man / "rec" / "flute.wav")
    (man / "pieces.jsonl").write_text(json.dumps(
        {"id": "flute-1", "audio": "rec/flute.wav", "midi": "scores/flute.mid",
         "instruments": ["Flute"]}) + "\n")
    pieces["flute-1"], names["flute-1"] = fl, ["Flute"]
    return {"root": root, "pieces": pieces, "names": names}


def run_mkqa(cli, *args, cwd=None):
    return cli("mkqa", *map(str, args), cwd=cwd)


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- what a clip must hold -------------------------------------------------------------------


def expected_notes(piece: Piece, start: int, end: int) -> list[list[tuple[int, int, int]]]:
    """Per voice that sounds in [start, end): (pitch, onset from start, duration cut at the
    edges), computed from the piece directly."""
    out = []
    for v in piece.voices:
        ns = sorted((n.pitch, max(n.start, start) - start, min(n.end, end) - max(n.start, start))
                    for n in v.notes if n.start < end and n.end > start)
        if ns:
            out.append(ns)
    return out


def check_clip(rec: dict, piece: Piece, names: list[str], base: Path, rests: bool = True) -> None:
    """The clip's ABC equals the piece's notes in the clip's span, and its audio sounds where
    those notes do."""
    start = round(piece.tick_at(rec["offset"]))
    end = round(piece.tick_at(rec["offset"] + rec["duration"]))
    bounds = set(piece.bar_starts(piece.end_tick + 4 * TPQ))
    assert start in bounds and (end in bounds or end >= piece.end_tick), "clips are bar-aligned"

    clip, warnings = read_abc(rec["abc"])
    assert not warnings
    got = [sorted((n.pitch, n.start, n.duration) for n in v.notes) for v in clip.voices]
    assert got == expected_notes(piece, start, end)
    assert rec["meta"]["instruments"] == [
        n for n, v in zip(names, piece.voices) if any(x.start < end and x.end > start for x in v.notes)
    ]
    m = piece.meter_at(start)
    assert rec["meta"]["metre"] == f"{m.numerator}/{m.denominator}"
    assert (clip.meter.numerator, clip.meter.denominator) == (m.numerator, m.denominator)
    assert rec["meta"]["tempo"] == round(piece.tempo_at(start))
    assert round(clip.bpm) == round(piece.tempo_at(start))

    audio_path = Path(rec["audio"]) if Path(rec["audio"]).is_absolute() else base / rec["audio"]
    y, sr = load_audio(audio_path, sr=SR, offset=rec["offset"], duration=rec["duration"])
    assert abs(len(y) / sr - rec["duration"]) < 0.05

    def rms(t0: float, t1: float) -> float:
        seg = y[int(t0 * sr): int(t1 * sr)]
        return float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0

    at = lambda tick: piece.seconds(start + tick) - rec["offset"]  # noqa: E731
    # every onset in the clip sounds (a note cut at the clip's start began earlier: a piano's
    # may have decayed by now, so only the rests below speak for it)
    onsets = {n.start - start for v in piece.voices for n in v.notes if start <= n.start < end}
    assert onsets == {o for ns in got for _, o, _ in ns} - ({0} - onsets)
    sounding = [rms(at(o) + 0.03, at(o) + 0.12) for o in sorted(onsets)]
    level = float(np.median(sounding))
    assert min(sounding) > 0.2 * level > 0, "every note of the clip sounds in its audio"
    # the rests (no voice sounding for a while) are quiet once the last note has died away
    spans = sorted((o, o + d) for ns in got for _, o, d in ns)
    t, quiet = 0, []
    for s, e in spans + [(end - start, end - start)]:
        if s - t >= TPQ // 2 and at(s) - at(t) > 0.35:
            quiet.append(rms(at(t) + 0.25, at(s) - 0.02))
        t = max(t, e)
    if rests:
        assert quiet, "each test clip has a rest"
        assert max(quiet) < 0.15 * level, "the audio is quiet where the clip's score rests"


# ---- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pairs", "urmp", "manifest"])
def test_every_clip_abc_holds_the_notes_its_audio_plays(cli, data, layout, tmp_path):
    src = data["root"] / layout
    if layout == "manifest":
        src = src / "pieces.jsonl"
    out = tmp_path / "qa.jsonl"
    p = run_mkqa(cli, src, "-o", out, "--max-seconds", 5)
    assert p.returncode == 0, p.stderr
    recs = read_records(out)
    clips = [r for r in recs if r["task"] == "transcribe"]
    assert clips and len({r["piece"] for r in clips}) == len({r["piece"] for r in recs})
    for rec in clips:
        piece = data["pieces"][rec["piece"]]
        check_clip(rec, piece, data["names"][rec["piece"]], out.parent)
        assert rec["duration"] <= 5 + 1e-6
        assert rec["messages"][1]["content"] == rec["abc"]
    # the clips of a piece tile it: the notes of all clips together are the piece's notes
    for pid in {r["piece"] for r in clips}:
        piece = data["pieces"][pid]
        mine = [r for r in clips if r["piece"] == pid]
        total = sum(len(v.notes) for r in mine for v in read_abc(r["abc"])[0].voices)
        crossing = sum(1 for v in piece.voices for n in v.notes
                       for r in mine if 0 < round(piece.tick_at(r["offset"])) - n.start < n.duration)
        assert total == piece.note_count + crossing


def test_records_have_the_chat_form_and_every_task(cli, data, tmp_path):
    out = tmp_path / "qa.jsonl"
    p = run_mkqa(cli, data["root"] / "pairs", "-o", out, "--max-seconds", 5)
    assert p.returncode == 0, p.stderr
    recs = read_records(out)
    keys = ["id", "piece", "split", "audio", "offset", "duration", "task", "messages", "abc", "meta"]
    for r in recs:
        assert list(r) == keys
        user, assistant = r["messages"]
        assert user["role"] == "user" and user["content"][0] == {"type": "audio"}
        assert user["content"][1]["type"] == "text" and user["content"][1]["text"].endswith("?") \
            or user["content"][1]["text"].endswith(".")
        assert assistant["role"] == "assistant" and isinstance(assistant["content"], str)
        assert set(r["meta"]) == {"tempo", "metre", "key", "instruments"}
        assert not Path(r["audio"]).is_absolute() and (out.parent / r["audio"]).is_file()
    by = {(r["piece"], r["task"]): r for r in recs if r["offset"] == 0}
    assert by[("reel", "tempo")]["messages"][1]["content"] == "120 BPM"
    assert by[("reel", "metre")]["messages"][1]["content"] == "4/4"
    assert by[("reel", "key")]["messages"][1]["content"] == "D minor"
    assert by[("irish/jig", "instruments")]["messages"][1]["content"] == "Flute, Cello"
    assert by[("irish/jig", "voices")]["messages"][1]["content"] == "2"
    # the tempo change at bar 3 of the reel reaches the clips after it
    assert {r["meta"]["tempo"] for r in recs if r["piece"] == "reel"} == {120, 150}
    # the air's ABC names no key: its clips have no key question, the others do
    assert ("air", "key") not in by and ("air", "metre") in by
    # several phrasings per question, chosen by --seed
    assert len({r["messages"][0]["content"][1]["text"] for r in recs if r["task"] == "tempo"}) > 1
    p2 = run_mkqa(cli, data["root"] / "pairs", "--max-seconds", 5, "--seed", 7)
    other = [json.loads(x) for x in p2.stdout.splitlines()]
    assert [r["id"] for r in other] == [r["id"] for r in recs]
    assert [r["messages"][0] for r in other] != [r["messages"][0] for r in recs]
    assert all(Path(r["audio"]).is_absolute() for r in other)  # stdout: absolute paths


def test_clip_length_options(cli, data, tmp_path):
    reel = data["pieces"]["reel"]  # 4/4, 120 then 150 BPM
    p = run_mkqa(cli, data["root"] / "pairs" / "reel.mid", "--tasks", "transcribe",
                 "--min-bars", 2, "--max-bars", 2, "--hop-bars", 1)
    assert p.returncode == 1  # a single MIDI without its recording: an error record...
    p = run_mkqa(cli, data["root"] / "pairs", "--tasks", "transcribe",
                 "--min-bars", 2, "--max-bars", 2, "--hop-bars", 1)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines() if '"piece": "reel"' in x]
    spans = [(round(reel.tick_at(r["offset"])), round(reel.tick_at(r["offset"] + r["duration"])))
             for r in recs]
    bar = 4 * TPQ
    assert spans == [(b * bar, (b + 2) * bar) for b in range(5)]  # 6 bars, 2-bar clips, hop 1
    for r, (s, e) in zip(recs, spans):
        assert r["duration"] == pytest.approx(reel.seconds(e) - reel.seconds(s), abs=1e-6)


def test_splits_are_by_piece_and_reruns_are_byte_identical(cli, tmp_path):
    folder = tmp_path / "tunes"
    for i in range(24):
        write_midi(tune(100 + i, beats=3, bars=4), folder / f"tune{i:02d}.mid")
    out = tmp_path / "qa"
    args = [folder, "--render", "--out-dir", out, "--max-seconds", 4]
    p = run_mkqa(cli, *args)
    assert p.returncode == 0, p.stderr
    assert len(list((out / "audio").glob("*.wav"))) == 24
    first = {n: (out / f"{n}.jsonl").read_bytes() for n in ("train", "val", "test")}
    pieces = {n: {json.loads(x)["piece"] for x in b.decode().splitlines()} for n, b in first.items()}
    assert not pieces["train"] & pieces["val"] and not pieces["train"] & pieces["test"] \
        and not pieces["val"] & pieces["test"]
    assert sum(map(len, pieces.values())) == 24 and len(pieces["train"]) > len(pieces["test"])
    for n, ids in pieces.items():
        assert all(split_of(pid, {"train": .8, "val": .1, "test": .1}) == n for pid in ids)
    # rendered audio is found again and the output is the same, byte for byte
    p = run_mkqa(cli, *args)
    assert p.returncode == 0 and "skipping" in p.stderr
    for n in first:
        (out / f"{n}.jsonl").unlink()
    p = run_mkqa(cli, *args, "--jobs", 1)
    assert p.returncode == 0, p.stderr
    assert {n: (out / f"{n}.jsonl").read_bytes() for n in first} == first
    # other ratios move pieces between splits, never split one
    p = run_mkqa(cli, folder, "--render", "--audio-dir", out / "audio", "--split", "a=1,b=1")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    split_by_piece = {}
    for r in recs:
        assert split_by_piece.setdefault(r["piece"], r["split"]) == r["split"]
    assert set(split_by_piece.values()) == {"a", "b"}


def test_rendered_audio_matches_the_clips(cli, data, tmp_path):
    folder = tmp_path / "scores"
    piece = tune(9, beats=4, programs=(40, 42))
    write_midi(piece, folder / "duet.mid")
    out = tmp_path / "qa.jsonl"
    p = run_mkqa(cli, folder, "--render", "-o", out, "--max-seconds", 5, "--tasks", "transcribe")
    assert p.returncode == 0, p.stderr
    recs = read_records(out)
    assert recs and all(r["audio"] == "audio/duet.wav" for r in recs)
    for rec in recs:
        check_clip(rec, piece, ["Violin", "Cello"], out.parent)


PICKUP_JIG = """X:1
T:pickup
M:6/8
L:1/8
Q:3/8=80
K:D
A | dfa afd | gbg fdB | AFA dfa | gec d2 |]
"""


def test_grid_quantizes_played_midi_and_interleaved_layout(cli, tmp_path):
    folder = tmp_path / "played"
    clean = tune(12, beats=4, programs=(40, 42))
    played = clean.copy()
    rng = random.Random(0)
    for v in played.voices:  # a performance: every onset and release off the grid by < 1/64
        for n in v.notes:
            n.start = max(0, n.start + rng.randint(-50, 50))
            n.duration += rng.randint(-50, 50)
    write_midi(played, folder / "played.mid")
    save_audio(clean, folder / "played.wav")
    (folder / "pickup.abc").write_text(PICKUP_JIG)
    jig, _ = read_abc(PICKUP_JIG)
    assert jig.anacrusis > 0
    save_audio(jig, folder / "pickup.wav")
    out = tmp_path / "qa.jsonl"
    p = run_mkqa(cli, folder, "-o", out, "--tasks", "transcribe", "--abc-layout", "interleaved",
                 "--min-bars", 2, "--max-bars", 2)
    assert p.returncode == 0, p.stderr
    recs = read_records(out)
    for rec in recs:
        if rec["piece"] == "played":  # quantized back onto the notated grid
            assert "[V:1]" in rec["abc"]
            assert ("[V:2]" in rec["abc"]) == (len(rec["meta"]["instruments"]) == 2)
            check_clip(rec, clean, ["Violin", "Cello"], out.parent)
        else:  # the pickup bar counts as a bar: the first clip is pickup + one bar
            check_clip(rec, jig, ["Acoustic Grand Piano"], out.parent, rests=False)
    assert [r["duration"] for r in recs if r["piece"] == "pickup"][0] == pytest.approx(
        jig.seconds(jig.anacrusis + 6 * TPQ // 2))
    # --grid 0 keeps the performance's timing
    p = run_mkqa(cli, folder, "--grid", 0, "--tasks", "transcribe", "--min-bars", 2, "--max-bars", 2)
    raw = [json.loads(x) for x in p.stdout.splitlines() if '"piece": "played"' in x]
    onsets = {n.start % (TPQ // 4) for r in raw for v in read_abc(r["abc"])[0].voices for n in v.notes}
    assert onsets != {0}


def test_bad_inputs_become_error_records_and_the_rest_goes_on(cli, data, tmp_path):
    folder = tmp_path / "mixed"
    good = tune(10, beats=3)
    write_midi(good, folder / "good.mid")
    save_audio(good, folder / "good.wav")
    save_audio(good, folder / "lonely.wav")  # a recording without a score
    write_midi(good, folder / "silent.mid")  # a score without a recording
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")  # corrupt MIDI
    save_audio(good, folder / "broken.wav")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"id": "gone", "audio": "mixed/missing.wav", "midi": "mixed/good.mid"}) + "\n"
        + json.dumps({"id": "ok", "audio": "mixed/good.wav", "midi": "mixed/good.mid"}) + "\n")
    out = tmp_path / "qa.jsonl"
    p = run_mkqa(cli, folder, manifest, "-o", out, "--tasks", "transcribe,metre")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    recs = read_records(out)
    errors = {r["piece"]: r["error"] for r in recs if "error" in r}
    assert set(errors) == {"lonely", "silent", "broken", "gone"}
    assert "lonely.wav" in errors["lonely"] and "silent.mid" in errors["silent"]
    assert "broken.mid" in errors["broken"] and "missing.wav" in errors["gone"]
    done = {r["piece"] for r in recs if "error" not in r}
    assert done == {"good", "ok"}
    # with --out-dir the errors go to their own file, the splits stay clean
    p = run_mkqa(cli, folder, "--out-dir", tmp_path / "dir")
    assert p.returncode == 1
    errs = read_records(tmp_path / "dir" / "errors.jsonl")
    assert {r["piece"] for r in errs} == {"lonely", "silent", "broken"}
    kept = [r for n in ("train", "val", "test") for r in read_records(tmp_path / "dir" / f"{n}.jsonl")]
    assert kept and all("error" not in r and r["piece"] == "good" for r in kept)


def test_user_mistakes_are_one_line(cli, data, tmp_path):
    for args in (["--split", "train=0.8,val"], ["--tasks", "tempo,lyrics"], ["--min-bars", "0"],
                 ["--abc-layout", "columns"], ["--layout", "musicnet"],
                 ["--render"], ["-o", tmp_path / "a.jsonl", "--out-dir", tmp_path]):
        p = run_mkqa(cli, data["root"] / "pairs", *args)
        assert p.returncode == 2, args
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = run_mkqa(cli, tmp_path / "nowhere")
    assert p.returncode == 2 and "nowhere" in p.stderr


def test_clip_piece_and_slice_piece():
    piece = tune(11, beats=3, bpm=120, bars=6)  # 1.5 s a bar
    bar = 3 * TPQ
    assert clip_piece(piece, max_seconds=30) == [(0, 6 * bar)]
    assert clip_piece(piece, max_seconds=4) == [(0, 2 * bar), (2 * bar, 4 * bar), (4 * bar, 6 * bar)]
    assert clip_piece(piece, max_seconds=1) == []  # not even one bar fits
    assert clip_piece(piece, max_seconds=30, min_bars=4, max_bars=4) == [(0, 4 * bar)]
    clip = slice_piece(piece, bar * 2, bar * 4)
    tied = [n for n in piece.voices[0].notes if n.start < 2 * bar < n.end][0]
    first = clip.voices[0].notes[0]
    assert (first.pitch, first.start, first.duration) == (tied.pitch, 0, tied.end - 2 * bar)
    assert clip.tempos == [Tempo(0, 120.0)] and clip.meters == [Meter(0, 3, 4)]
