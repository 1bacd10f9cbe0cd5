"""abcscribe render: MIDI/ABC to audio with each engine, single files and folders."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from abcscribe.core.midi import write_midi
from abcscribe.core.notes import TPQ, Note, Piece, Tempo, Voice


def melody_midi(path, program=0):
    # 60 BPM: A4 for one beat, one beat of rest, E5 for one beat
    v = Voice([Note(69, 0, TPQ, 100), Note(76, 2 * TPQ, TPQ, 100)], program=program)
    write_midi(Piece([v], tempos=[Tempo(0, 60.0)]), path)


def peak_freq(y, sr, t0, t1):
    seg = y[int(t0 * sr) : int(t1 * sr)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    return np.fft.rfftfreq(seg.size, 1 / sr)[spec.argmax()]


def rms(y, sr, t0, t1):
    return float(np.sqrt(np.mean(y[int(t0 * sr) : int(t1 * sr)] ** 2)))


@pytest.mark.parametrize("engine", ["builtin", "fluidsynth"])
def test_render_a_midi_file_with_each_engine(tmp_path, cli, engine):
    if engine == "fluidsynth":
        from conftest import need_tool

        need_tool("fluidsynth")
    melody_midi(tmp_path / "tune.mid", program=40)
    out = tmp_path / "tune.wav"
    p = cli("render", tmp_path / "tune.mid", "-o", out, "--engine", engine,
            "--sample-rate", "16000")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["engine"] == engine and rec["sample_rate"] == 16000
    y, sr = sf.read(out)
    assert sr == 16000 and y.ndim == 1 and len(y) / sr >= 3.0
    assert abs(peak_freq(y, sr, 0.1, 0.9) - 440.0) < 4
    assert abs(peak_freq(y, sr, 2.1, 2.9) - 659.26) < 4
    assert rms(y, sr, 0.1, 0.9) > 0.02
    assert rms(y, sr, 1.4, 1.9) < 0.02 * rms(y, sr, 0.1, 0.9)  # the rest is silent


def test_render_abc_text(tmp_path, cli):
    abc = pytest.importorskip("abcscribe.core.abc")
    if not hasattr(abc, "read_abc"):
        pytest.skip("core.abc.read_abc not there yet")
    (tmp_path / "tune.abc").write_text("X:1\nT:Test\nM:4/4\nL:1/4\nQ:1/4=60\nK:C\nA z e z|]\n")
    p = cli("render", tmp_path / "tune.abc", "--engine", "builtin", "--sample-rate", "16000")
    assert p.returncode == 0, p.stderr
    y, sr = sf.read(tmp_path / "tune.wav")
    assert abs(peak_freq(y, sr, 0.1, 0.9) - 440.0) < 4
    assert rms(y, sr, 1.4, 1.9) < 0.02 * rms(y, sr, 0.1, 0.9)


def test_render_a_folder_mirrors_it_and_survives_a_bad_file(tmp_path, cli):
    src = tmp_path / "midi"
    (src / "a").mkdir(parents=True)
    melody_midi(src / "one.mid")
    melody_midi(src / "a" / "two.mid", program=73)
    (src / "a" / "broken.mid").write_bytes(b"MThd this is not a midi file")
    out = tmp_path / "audio"
    p = cli("render", src, "-o", out, "--engine", "builtin", "--format", "flac")
    assert p.returncode == 1
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["input"].split("midi/")[1] for r in recs] == ["a/broken.mid", "a/two.mid", "one.mid"]
    assert "broken.mid" in recs[0]["error"] and "Traceback" not in p.stderr
    assert (out / "one.flac").exists() and (out / "a" / "two.flac").exists()
    assert not (out / "a" / "broken.flac").exists()
    # once the bad file is gone, a re-run skips what is done
    (src / "a" / "broken.mid").unlink()
    again = cli("render", src, "-o", out, "--format", "flac")
    assert again.returncode == 0
    assert all(json.loads(line).get("skipped") for line in again.stdout.splitlines())


def test_render_option_mistakes_are_one_line_errors(tmp_path, cli):
    melody_midi(tmp_path / "t.mid")
    for args in (["--engine", "timidity"], ["--soundfont", tmp_path / "none.sf2"],
                 ["--timbre-spread", "3"], ["--engine", "fluidsynth", "--timbre-spread", "1"]):
        p = cli("render", tmp_path / "t.mid", "-o", tmp_path / "x.wav", *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_timbre_spread_renders_the_same_notes_in_another_colour_per_file(tmp_path, cli):
    """--timbre-spread: the notes stay where they were (pitch, onset, rests), the partials and
    envelope differ from the fixed timbre and from file to file, and a re-render is the same."""
    for name in ("one", "two"):
        melody_midi(tmp_path / f"{name}.mid", program=40)
    audio = {}
    for label, extra in (("plain", []), ("varied", ["--timbre-spread", "1"]),
                         ("again", ["--timbre-spread", "1"])):
        p = cli("render", tmp_path / "one.mid", tmp_path / "two.mid", "-o", tmp_path / label,
                "--engine", "builtin", "--sample-rate", "16000", *extra)
        assert p.returncode == 0, p.stderr
        audio[label] = {n: sf.read(tmp_path / label / f"{n}.wav")[0] for n in ("one", "two")}
    for y in audio["varied"].values():
        assert abs(peak_freq(y, 16000, 0.1, 0.9) - 440.0) < 4
        assert abs(peak_freq(y, 16000, 2.1, 2.9) - 659.26) < 4
        assert rms(y, 16000, 1.4, 1.9) < 0.02 * rms(y, 16000, 0.1, 0.9)

    def spectrum(y):  # partial levels of the first note
        s = np.abs(np.fft.rfft(y[1600:14400] * np.hanning(12800)))
        return s / s.max()

    plain, one, two = (spectrum(y) for y in (audio["plain"]["one"], audio["varied"]["one"],
                                             audio["varied"]["two"]))  # fmt: skip
    assert np.abs(one - plain).max() > 0.05 and np.abs(one - two).max() > 0.05
    assert np.array_equal(audio["plain"]["one"], audio["plain"]["two"])
    for n in ("one", "two"):
        assert np.array_equal(audio["varied"][n], audio["again"][n])
