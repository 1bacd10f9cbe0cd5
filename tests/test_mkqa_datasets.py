"""mkqa on Slakh2100, MAESTRO and URMP as they are on disk (see dataset_fixtures for the formats).

Each test builds a miniature of the real tree, runs ``abcscribe mkqa`` as a user does and checks
the records against what the recordings hold: which notes, which instruments, which split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from abcscribe.core.abc import read_abc
from abcscribe.core.notes import TPQ, Note
from abcscribe.core.qa import split_of
from dataset_fixtures import (
    GM_NAMES, Performance, band_stems, make_slakh_track, make_urmp_piece, write_maestro_metadata,
)

HASH = {"train": 0.8, "val": 0.1, "test": 0.1}


def read_records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def clip_notes(rec: dict) -> dict[tuple[int, bool], list[tuple[int, int, int]]]:
    """The clip's ABC voices by (program, drum): (pitch, onset, duration) in the clip's ticks."""
    clip, warnings = read_abc(rec["abc"])
    assert not warnings
    return {(v.program, v.drum): sorted((n.pitch, n.start, n.duration) for n in v.notes)
            for v in clip.voices}


def expected(notes: list[Note], start: int, end: int) -> list[tuple[int, int, int]]:
    return sorted((n.pitch, max(n.start, start) - start, min(n.end, end) - max(n.start, start))
                  for n in notes if n.start < end and n.end > start)


# ---- Slakh2100 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slakh(tmp_path_factory):
    root = tmp_path_factory.mktemp("slakh") / "slakh2100_flac_redux"
    tracks = {
        "train/Track00001": band_stems(1),
        "validation/Track00002": band_stems(2, guitar_rendered=False),
        "test/Track00003": band_stems(3),
    }
    for tid, stems in tracks.items():
        make_slakh_track(root / tid, stems)
    shutil.copytree(root / "test/Track00003", root / "omitted/Track00004")  # a duplicate
    make_slakh_track(root / "train/Track00005", band_stems(5), mix=False)
    make_slakh_track(root / "train/Track00006", band_stems(6))
    (root / "train/Track00006/metadata.yaml").write_text("stems: {S00: [unclosed\n")
    return root, tracks


def test_slakh_voices_are_the_stems_they_are_not_the_stems_at_their_position(cli, slakh, tmp_path):
    """Finding 1: all_src.mid lists piano, bass, guitar, drums (channel order); metadata.yaml
    lists guitar, drums, piano, bass. Every voice of every clip must carry its own stem's
    instrument and notes (pairing by position called the piano a Distortion Guitar and the
    bass line drums)."""
    root, tracks = slakh
    out = tmp_path / "qa"
    p = cli("mkqa", root, "--out-dir", out, "--tasks", "transcribe,instruments", "--max-seconds", 5)
    assert p.returncode == 1, p.stderr  # the two broken tracks
    recs = [r for n in ("train", "val", "test") for r in read_records(out / f"{n}.jsonl")]
    clips = [r for r in recs if r["piece"] == "train/Track00001" and r["task"] == "transcribe"]
    assert clips
    stems = tracks["train/Track00001"]
    for rec in clips:
        start = round(rec["offset"] * 100 / 60 * TPQ)  # all_src.mid: 100 BPM throughout
        end = start + round(rec["duration"] * 100 / 60 * TPQ)
        want = {(0 if s.drum else s.program, s.drum): expected(s.notes, start, end) for s in stems}
        got = clip_notes(rec)
        assert got == {k: v for k, v in want.items() if v}
        assert rec["meta"]["instruments"] == [
            "Drum Kit" if s.drum else GM_NAMES[s.program] for s in stems
            if expected(s.notes, start, end)]
    drums = [ns for rec in clips for (prog, drum), ns in clip_notes(rec).items() if drum]
    assert drums and {p for ns in drums for p, _, _ in ns} == {36, 38}  # drums are the drums


def test_slakh_unrendered_stems_are_left_out_of_the_mix_answers(cli, slakh, tmp_path):
    """Finding 2: Track00002's guitar stem has ``audio_rendered: false`` (no flac, no MIDI):
    its notes are in all_src.mid but nobody can hear them in mix.flac."""
    root, tracks = slakh
    p = cli("mkqa", root / "validation", "--tasks", "transcribe,instruments,voices",
            "--max-seconds", 5)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert recs and {r["piece"] for r in recs} == {"Track00002"}  # ids from the folder given
    guitar = {n.pitch for n in tracks["validation/Track00002"][0].notes}
    for rec in recs:
        assert "Distortion Guitar" not in rec["meta"]["instruments"]
        if rec["task"] == "transcribe":
            got = clip_notes(rec)
            assert (30, False) not in got
            melodic = {p for (prog, drum), ns in got.items() if not drum for p, _, _ in ns}
            assert not guitar & melodic - {n.pitch for s in tracks["validation/Track00002"][2:]
                                            for n in s.notes}
        if rec["task"] == "voices":
            assert int(rec["messages"][1]["content"]) <= 3
    assert "S00" in p.stderr and "not rendered" in p.stderr


def test_slakh_official_splits_and_omitted_tracks(cli, slakh, tmp_path):
    """Finding 3: the split is the track's folder, omitted/ (duplicates) is skipped, and
    --split still overrides."""
    root, _ = slakh
    # a hash split would put these elsewhere: the test tells the two apart
    assert [split_of(t, HASH) for t in ("validation/Track00002", "test/Track00003")] != ["val", "test"]
    out = tmp_path / "qa"
    p = cli("mkqa", root, "--out-dir", out, "--tasks", "voices", "--max-seconds", 5)
    pieces = {n: {r["piece"] for r in read_records(out / f"{n}.jsonl")} for n in ("train", "val", "test")}
    assert pieces == {"train": {"train/Track00001"}, "val": {"validation/Track00002"},
                      "test": {"test/Track00003"}}
    errors = {r["piece"]: r["error"] for r in read_records(out / "errors.jsonl")}
    assert set(errors) == {"train/Track00005", "train/Track00006"}
    assert "mix.flac" in errors["train/Track00005"] and "metadata" in errors["train/Track00006"]
    assert "omitted" in p.stderr and "Traceback" not in p.stderr
    p = cli("mkqa", root / "test", "--tasks", "voices", "--split", "a=1")
    assert p.returncode == 0, p.stderr
    assert {json.loads(x)["split"] for x in p.stdout.splitlines()} == {"a"}
    p = cli("mkqa", root / "test" / "Track00003", "--tasks", "voices")  # one track, its split
    assert {json.loads(x)["split"] for x in p.stdout.splitlines()} == {"test"}


def test_slakh_stem_clips_have_the_stem_audio_and_its_own_notes(cli, slakh):
    root, tracks = slakh
    p = cli("mkqa", root / "validation", "--slakh-audio", "stems", "--tasks", "transcribe",
            "--max-seconds", 5)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    stems = {s.name: s for s in tracks["validation/Track00002"]}
    assert {r["piece"].rsplit("/", 1)[1] for r in recs} == {"S01", "S02", "S03"}  # S00 unrendered
    for rec in recs:
        st = stems[rec["piece"].rsplit("/", 1)[1]]
        assert rec["audio"].endswith(f"Track00002/stems/{st.name}.flac")
        assert rec["meta"]["instruments"] == ["Drum Kit" if st.drum else GM_NAMES[st.program]]
        start = round(rec["offset"] * 100 / 60 * TPQ)
        end = start + round(rec["duration"] * 100 / 60 * TPQ)
        assert clip_notes(rec) == {(0 if st.drum else st.program, st.drum): expected(st.notes, start, end)}


def test_slakh_missing_stem_file_is_an_error_record_and_the_rest_goes_on(cli, tmp_path):
    root = tmp_path / "slakh2100_flac_redux"
    make_slakh_track(root / "train" / "Track00009", band_stems(9))
    (root / "train" / "Track00009" / "stems" / "S03.flac").unlink()
    out = tmp_path / "qa"
    p = cli("mkqa", root, "--slakh-audio", "both", "--tasks", "instruments", "--out-dir", out)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    errors = {r["piece"]: r["error"] for r in read_records(out / "errors.jsonl")}
    assert list(errors) == ["train/Track00009/S03"] and "stems/S03" in errors["train/Track00009/S03"]
    done = {r["piece"] for r in read_records(out / "train.jsonl")}
    assert done == {"train/Track00009", "train/Track00009/S00", "train/Track00009/S01",
                    "train/Track00009/S02"}


def test_slakh_without_stem_midi_pairs_all_src_voices_by_instrument(cli, tmp_path):
    root = tmp_path / "babyslakh_16k"
    stems = band_stems(7, guitar_rendered=False)
    make_slakh_track(root / "Track00007", stems, stem_midi=False)
    p = cli("mkqa", root, "--tasks", "transcribe", "--max-seconds", 5)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    for rec in recs:
        start = round(rec["offset"] * 100 / 60 * TPQ)
        end = start + round(rec["duration"] * 100 / 60 * TPQ)
        want = {(0 if s.drum else s.program, s.drum): expected(s.notes, start, end)
                for s in stems if s.rendered}
        assert clip_notes(rec) == {k: v for k, v in want.items() if v}
    # an unrendered stem sharing a rendered one's instrument cannot be told apart by it
    stems[0].program = 1  # the silent guitar now plays the piano's program
    make_slakh_track(root / "Track00008", stems, stem_midi=False)
    p = cli("mkqa", root / "Track00008", "--tasks", "transcribe")
    assert p.returncode == 1 and "S00" in p.stderr and "Traceback" not in p.stderr


# ---- MAESTRO -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maestro(tmp_path_factory):
    root = tmp_path_factory.mktemp("maestro") / "maestro-v3.0.0"
    perfs = [
        Performance("MIDI-Unprocessed_01_R1_2018_wav--1", "Ballade No. 1 in G Minor", "train", seed=1),
        Performance("MIDI-Unprocessed_02_R1_2018_wav--3", "Nocturne in E-flat Major", "test", seed=2),
        Performance("MIDI-Unprocessed_05_R2_2018_wav--2", "Nocturne in E-flat Major", "test",
                    bpm=76.0, seed=3),
        Performance("MIDI-Unprocessed_07_R1_2018_wav--4", "Etude Op. 10 No. 4", "validation",
                    bpm=96.0, seed=4),
    ]
    for perf in perfs:
        perf.write(root)
    rows = [perf.row() for perf in perfs]
    missing = dict(rows[0], midi_filename="2018/gone.midi", audio_filename="2018/gone.wav")
    for kind in ("csv", "v2json", "v3json"):
        write_maestro_metadata(root, rows + [missing], kind)
    return root, {Path(p.row()["midi_filename"]).with_suffix("").as_posix(): p for p in perfs}


def test_maestro_splits_follow_its_split_column_from_csv_and_json(cli, maestro, tmp_path):
    """Finding 4: both performances of the Nocturne are in MAESTRO's test split; a hash per
    performance would scatter them. The CSV and both JSON forms give the same records."""
    root, perfs = maestro
    official = {pid: {"validation": "val"}.get(p.split, p.split) for pid, p in perfs.items()}
    assert any(split_of(pid, HASH) != s for pid, s in official.items())  # the test can tell
    out = tmp_path / "qa"
    p = cli("mkqa", root, "--out-dir", out, "--tasks", "tempo,key")
    assert p.returncode == 1  # the row whose files are gone
    pieces = {n: {r["piece"] for r in read_records(out / f"{n}.jsonl")} for n in ("train", "val", "test")}
    by_split = {"train": set(), "val": set(), "test": set()}
    for pid, s in official.items():
        by_split[s].add(pid)
    assert pieces == by_split
    assert [r["piece"] for r in read_records(out / "errors.jsonl")] == ["2018/gone"]
    csv_recs = [r for n in ("train", "val", "test") for r in read_records(out / f"{n}.jsonl")]
    for name in ("maestro-v2.0.0.json", "maestro-v3.0.0.json"):
        q = cli("mkqa", root / name, "--tasks", "tempo,key", "-o", tmp_path / f"{name}.jsonl")
        assert q.returncode == 1, q.stderr
        got = [r for r in read_records(tmp_path / f"{name}.jsonl") if "error" not in r]
        assert sorted((r["id"], r["split"]) for r in got) == sorted((r["id"], r["split"]) for r in csv_recs)


def test_maestro_answers_come_from_the_playing_not_the_placeholder_tempo(cli, maestro, tmp_path):
    """Finding 5: the MIDI says 120 BPM and 4/4 (placeholders); the pianist plays at 76-96 BPM
    with the sustain pedal down through each beat. Tempo answers come from tracked beats (and
    say so), there is no metre answer, bar lines are the tracked beats, and notes last as long
    as the pedal holds them."""
    root, perfs = maestro
    out = tmp_path / "qa.jsonl"
    p = cli("mkqa", root, "-o", out, "--split", "all=1", "--max-seconds", 6)
    recs = [r for r in read_records(out) if "error" not in r]
    assert recs
    for rec in recs:
        perf = perfs[rec["piece"]]
        assert abs(rec["meta"]["tempo"] - perf.bpm) <= 0.08 * perf.bpm, (rec["meta"], perf.bpm)
        assert rec["meta"]["metre"] is None and "beats tracked" in rec["meta"]["timing"]
        if rec["task"] == "tempo":
            assert rec["messages"][1]["content"] == f"{rec['meta']['tempo']} BPM"
        assert "M:4/4" not in rec["abc"] and "=120" not in rec["abc"]
    lengths = {pid: [] for pid in perfs}
    for rec in (r for r in recs if r["task"] == "transcribe"):
        clip, _ = read_abc(rec["abc"])
        assert (clip.meter.numerator, clip.meter.denominator) == (1, 4)
        perf = perfs[rec["piece"]]
        # keys are released after 0.12 s, the pedal holds them to the next beat
        lengths[rec["piece"]] += [clip.seconds(n.end) - clip.seconds(n.start)
                                  for v in clip.voices for n in v.notes if n.end < clip.end_tick]
        # every note the pianist played in the clip is there, near its time
        played = [(on, pitch) for on, _, pitch, _ in perf.notes
                  if rec["offset"] + 0.1 < on < rec["offset"] + rec["duration"] - 0.1]
        got = [(rec["offset"] + clip.seconds(n.start), n.pitch) for v in clip.voices for n in v.notes]
        for on, pitch in played:
            assert any(pp == pitch and abs(t - on) < 0.12 for t, pp in got), (on, pitch)
    for pid, ls in lengths.items():
        assert sorted(ls)[len(ls) // 2] > 0.6 * 60.0 / perfs[pid].bpm
    assert not [r for r in recs if r["task"] == "metre"] and "metre unknown" in p.stderr


def test_maestro_unreadable_metadata_is_an_error_record(cli, maestro, tmp_path):
    root, _ = maestro
    bad = tmp_path / "maestro-v2.0.0.json"
    bad.write_text('[{"midi_filename": "2018/a.midi", ')
    out = tmp_path / "qa"
    p = cli("mkqa", bad, root / "maestro-v3.0.0.json", "--out-dir", out, "--tasks", "tempo")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    errors = read_records(out / "errors.jsonl")
    assert {r["piece"] for r in errors} == {"maestro-v2.0.0.json", "2018/gone"}
    assert sum(len(read_records(out / f"{n}.jsonl")) for n in ("train", "val", "test")) > 0


# ---- URMP --------------------------------------------------------------------------------------


def urmp_parts(seed: int) -> list[tuple[str, int, list[Note]]]:
    import random

    rng = random.Random(seed)
    melody, bass = [], []
    for b in range(6):
        t = b * 4 * TPQ
        for k in range(3):
            melody.append(Note(rng.randrange(67, 80), t + k * TPQ, TPQ))
        bass.append(Note(rng.randrange(43, 52), t, 2 * TPQ))
    return [("vn", 40, melody), ("vc", 42, bass)]


def test_urmp_notes_come_from_the_aligned_annotations(cli, tmp_path):
    """Finding 6: the players start 1.3 s in and play at 80 BPM with rubato; Sco_*.mid is the
    score at 100 BPM from zero. The clips' notes are those of Notes_*.txt, where the audio
    plays them."""
    root = tmp_path / "Dataset"
    performed = make_urmp_piece(root, 1, "Jupiter", urmp_parts(1))
    out = tmp_path / "qa.jsonl"
    p = cli("mkqa", root, "-o", out, "--tasks", "transcribe,instruments", "--max-seconds", 6)
    assert p.returncode == 0, p.stderr
    clips = [r for r in read_records(out) if r["task"] == "transcribe"]
    got = []
    for rec in clips:
        clip, _ = read_abc(rec["abc"])
        assert {v.program for v in clip.voices} <= {40, 42}
        got += [(rec["offset"] + clip.seconds(n.start), n.pitch, v.program)
                for v in clip.voices for n in v.notes]
    for code, prog in (("vn", 40), ("vc", 42)):
        for on, pitch, _ in performed[code]:
            assert any(pp == pitch and pr == prog and abs(t - on) < 0.15 for t, pp, pr in got), \
                (code, on, pitch)
    # the score's timing is far from the recording's: reading Sco_*.mid could not pass the above
    score_onsets = [n.start / TPQ * 60 / 100 for n in urmp_parts(1)[0][2]]
    assert sum(abs(s - on) > 0.3 for s, (on, _, _) in zip(score_onsets, performed["vn"])) > 10


def test_urmp_piece_with_a_part_unannotated_is_an_error_and_without_notes_uses_the_score(cli, tmp_path):
    root = tmp_path / "Dataset"
    make_urmp_piece(root, 1, "Jupiter", urmp_parts(1))
    make_urmp_piece(root, 2, "Sonata", urmp_parts(2))
    (root / "02_Sonata_vn_vc" / "Notes_2_vc_02_Sonata.txt").unlink()  # a part's notes missing
    make_urmp_piece(root, 3, "Air", urmp_parts(3), notes_files=False)
    out = tmp_path / "qa.jsonl"
    p = cli("mkqa", root, "-o", out, "--tasks", "transcribe,metre", "--max-seconds", 6)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    recs = read_records(out)
    errors = {r["piece"]: r["error"] for r in recs if "error" in r}
    assert list(errors) == ["02_Sonata_vn_vc"] and "Notes_" in errors["02_Sonata_vn_vc"]
    assert {r["piece"] for r in recs if "error" not in r} == {"01_Jupiter_vn_vc", "03_Air_vn_vc"}
    # annotated pieces have no metre answer (a performance); the score-only one keeps its 4/4
    assert {r["piece"] for r in recs if r.get("task") == "metre"} == {"03_Air_vn_vc"}
    assert "03_Air_vn_vc: no Notes_*.txt" in p.stderr
