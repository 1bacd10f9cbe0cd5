"""midi2abc and abc2midi as a user runs them, and the round trip through abcmidi's abc2midi."""

import sys
import contextlib
import io
import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abcscribe.core.abc import read_abc, read_abc_tunes
from abcscribe.core.midi import read_midi, write_midi
from abcscribe.core.notes import Meter, Note, Piece, Tempo, Voice
from conftest import need_tool

Q = 960


def small_piece(shift=0):
    lead = Voice([Note(72 + shift + i % 5, i * Q // 2, Q // 2) for i in range(16)], program=73)
    bass = Voice([Note(48 + shift, i * 2 * Q, 2 * Q) for i in range(4)], program=32)
    drums = Voice([Note(36 if i % 2 == 0 else 38, i * Q, Q // 4) for i in range(8)], drum=True)
    return Piece([lead, bass, drums], tempos=[Tempo(0, 100)], meters=[Meter(0, 4, 4)])


@pytest.fixture
def midi_dir(tmp_path):
    src = tmp_path / "midi"
    write_midi(small_piece(), src / "a.mid")
    write_midi(small_piece(2), src / "set" / "b.mid")
    return src


def notes(piece):
    return sorted((n.start, n.pitch, n.duration) for v in piece.voices for n in v.notes)


def test_midi_to_abc_on_stdout_one_tune_per_input(cli, midi_dir):
    p = cli("midi2abc", midi_dir)
    assert p.returncode == 0, p.stderr
    tunes = read_abc_tunes(p.stdout)
    assert [t.splitlines()[0] for t in p.stdout.split("\n\n")] == ["X:1", "X:2"]
    assert "T:a" in p.stdout and 'V:1 name="Flute"' in p.stdout
    assert "%%MIDI program 32" in p.stdout and "%%MIDI channel 10" in p.stdout
    assert notes(tunes[0][0]) == notes(read_midi(midi_dir / "a.mid"))
    assert notes(tunes[1][0]) == notes(read_midi(midi_dir / "set" / "b.mid"))


def test_output_folder_mirrors_inputs_and_resumes(cli, midi_dir, tmp_path):
    out = tmp_path / "abc"
    p = cli("midi2abc", midi_dir, "-o", out, "--layout", "interleaved", "--drums", "drop")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    b = (out / "set" / "b.abc").read_text()
    assert "[V:1]" in b and "channel 10" not in b
    assert len(read_abc(b)[0].voices) == 2
    (out / "a.abc").write_text("edited")
    p = cli("midi2abc", midi_dir, "-o", out)
    assert "skipped" in p.stderr and (out / "a.abc").read_text() == "edited"
    p = cli("midi2abc", midi_dir, "-o", out, "--overwrite", "--key", "none")
    assert p.returncode == 0 and "K:none" in (out / "a.abc").read_text()


def test_jsonl_records_and_a_bad_file_in_the_batch(cli, midi_dir):
    (midi_dir / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    p = cli("midi2abc", midi_dir, "--jsonl", "--unit", "1/8", "--bars-per-line", "2")
    assert p.returncode == 1
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [Path(r["path"]).name for r in recs] == ["a.mid", "broken.mid", "b.mid"]
    assert recs[1]["abc"] is None and "broken.mid" in recs[1]["error"]
    assert recs[0]["error"] is None and "L:1/8" in recs[0]["abc"]
    assert "Traceback" not in p.stderr and "1 of 3 inputs failed" in p.stderr


def test_jobs_give_the_same_output_in_the_same_order(cli, midi_dir, tmp_path):
    for i in range(5):
        write_midi(small_piece(i - 2), midi_dir / "more" / f"c{i}.mid")
    (midi_dir / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    one = cli("midi2abc", midi_dir, "--jsonl")
    two = cli("midi2abc", midi_dir, "--jsonl", "--jobs", "2")
    assert one.returncode == two.returncode == 1  # the broken file, in both
    assert two.stdout == one.stdout and len(two.stdout.splitlines()) == 8
    assert cli("midi2abc", midi_dir, "-j", "0").stdout == cli("midi2abc", midi_dir).stdout
    # -o with some outputs there already: those are skipped, the rest written as with one job
    out = tmp_path / "abc"
    cli("midi2abc", midi_dir / "a.mid", "-o", out)
    p = cli("midi2abc", midi_dir, "-o", out, "--jobs", "3")
    assert p.returncode == 1 and "skipped" in p.stderr
    single = tmp_path / "single"
    cli("midi2abc", midi_dir, "-o", single)
    written = sorted(f.relative_to(out) for f in out.rglob("*.abc"))
    assert written == sorted(f.relative_to(single) for f in single.rglob("*.abc"))
    assert len(written) == 7
    for rel in written:
        assert (out / rel).read_text() == (single / rel).read_text()


def test_stdin_and_user_mistakes(cli, midi_dir):
    data = (midi_dir / "a.mid").read_bytes()
    p = subprocess.run([sys.executable, "-m", "abcscribe", "midi2abc", "-"], input=data,
                       capture_output=True)
    assert p.returncode == 0 and p.stdout.startswith(b"X:1\n")
    for args in (["--unit", "sixteenth"], ["--layout", "columns"], ["--grid", "-3"],
                 ["--key", "H#"], ["--drums", "maybe"]):
        p = cli("midi2abc", midi_dir, *args)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, args
    p = cli("midi2abc", midi_dir / "missing.mid")
    assert p.returncode == 2 and "missing.mid" in p.stderr


def test_abc2midi_plays_back_what_midi2abc_wrote(cli, midi_dir, tmp_path):
    abc = cli("midi2abc", midi_dir / "a.mid", check=True).stdout
    (tmp_path / "two.abc").write_text(abc + "\n" + abc.replace("X:1", "X:7").replace("program 73", "program 74"))
    p = cli("abc2midi", tmp_path / "two.abc", "-o", tmp_path / "a.mid")
    assert p.returncode == 0, p.stderr
    back = read_midi(tmp_path / "a.mid")
    assert notes(back) == notes(read_midi(midi_dir / "a.mid"))
    assert [v.program for v in back.voices] == [73, 32, 0] and back.voices[2].drum
    assert back.bpm == 100
    p = cli("abc2midi", tmp_path / "two.abc", "--tune", "7", "-o", tmp_path / "b.mid")
    assert p.returncode == 0 and read_midi(tmp_path / "b.mid").voices[0].program == 74
    p = cli("abc2midi", tmp_path / "two.abc", "--tune", "3", "-o", tmp_path / "c.mid")
    assert p.returncode == 2 and "X:3" in p.stderr
    (tmp_path / "empty.abc").write_text("X:1\nT:nothing\nK:C\n")
    assert cli("abc2midi", tmp_path / "empty.abc").returncode == 2


def _run_in_process(args):
    from abcscribe.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            return e.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


GOOD = write_midi(small_piece())


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0" + b),
    st.integers(0, len(GOOD)).map(lambda n: GOOD[:n]),
    st.tuples(st.integers(14, len(GOOD) - 1), st.integers(0, 255)).map(
        lambda t: GOOD[:t[0]] + bytes([t[1]]) + GOOD[t[0] + 1:]),
))
def test_garbage_midi_gives_an_error_record_not_a_traceback(tmp_path, data):
    path = tmp_path / "x.mid"
    path.write_bytes(data)
    code, out, err = _run_in_process(["midi2abc", str(path), "--jsonl"])
    assert code in (0, 1)
    rec = json.loads(out)
    assert (rec["error"] is None) == (code == 0)
    if rec["abc"]:
        read_abc(rec["abc"])


# ---- fidelity: our ABC through abcmidi's abc2midi --------------------------------------------
CORPUS = [
    "bach/bwv66.6",  # chorale (pickup)
    "bach/bwv7.7",  # chorale
    "haydn/opus1no1/movement3",  # string quartet
    "mozart/k155/movement2",  # string quartet
    "joplin/maple_leaf_rag",  # rag: syncopation, chords
    "monteverdi/madrigal.3.1",  # madrigal, five voices
    "ryansMammoth/TerencesRambleReel.abc",  # folk: triplets, pickup
    "ryansMammoth/CentennialHornpipe.abc",  # folk: dotted rhythms, accidentals
    "ryansMammoth/ComeUnderMyPladdieJig.abc",  # folk: 6/8
]


def _export(name, path):
    from music21 import corpus, tempo

    score = corpus.parse(name)
    if hasattr(score, "scores"):
        score = score.scores[0]
    if name == "bach/bwv7.7":  # tempo changes
        part = score.parts[0]
        for bar, bpm in ((3, 72), (7, 132), (12, 60)):
            m = part.measure(bar)
            if m is not None:
                m.insert(0, tempo.MetronomeMark(number=bpm))
    score.write("midi", fp=str(path))


def _onsets(piece):
    return [(piece.seconds(n.start), piece.seconds(n.end), n.pitch)
            for v in piece.voices for n in v.notes]


def onset_f1(ref, est):
    import mir_eval

    def arrays(ns):
        iv = np.array([[a, max(b, a + 1e-3)] for a, b, _ in ns]).reshape(-1, 2)
        hz = 440.0 * 2 ** ((np.array([p for _, _, p in ns], dtype=float) - 69) / 12)
        return iv, hz

    if not ref or not est:
        return float(ref == est)
    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    return mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=1.0, offset_ratio=None)[2]


@pytest.mark.slow
def test_abcmidi_plays_our_abc_with_the_same_notes(cli, tmp_path):
    need_tool("abc2midi")
    warnings.filterwarnings("ignore")
    src = tmp_path / "midi"
    src.mkdir()
    for i, name in enumerate(CORPUS):
        _export(name, src / f"{i:02d}_{name.replace('/', '_').replace('.abc', '')}.mid")
    out = tmp_path / "abc"
    cli("midi2abc", src, "-o", out, check=True)
    scores, baseline = {}, {}
    for mid in sorted(src.glob("*.mid")):
        ref = read_midi(mid)
        abc = out / (mid.stem + ".abc")
        played = tmp_path / (mid.stem + ".played.mid")
        subprocess.run(["abc2midi", str(abc), "-o", str(played)], capture_output=True)
        scores[mid.stem] = onset_f1(_onsets(ref), _onsets(read_midi(played, grid=None)))
        # abcmidi's own converter on the same file, for comparison
        theirs = tmp_path / (mid.stem + ".abcmidi.abc")
        subprocess.run(["midi2abc", "-f", str(mid), "-o", str(theirs)], capture_output=True)
        subprocess.run(["abc2midi", str(theirs), "-o", str(played)], capture_output=True)
        baseline[mid.stem] = (onset_f1(_onsets(ref), _onsets(read_midi(played, grid=None)))
                              if played.exists() else 0.0)
    for name, f in scores.items():
        print(f"{name}: onset F1 {f:.4f} (abcmidi's midi2abc: {baseline[name]:.4f})")
    vals = list(scores.values())
    print(f"mean {np.mean(vals):.4f} worst {min(vals):.4f}; abcmidi's midi2abc mean "
          f"{np.mean(list(baseline.values())):.4f} worst {min(baseline.values()):.4f}")
    assert len(vals) == len(CORPUS)
    assert min(vals) >= 0.99
