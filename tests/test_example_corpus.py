"""examples/corpus.py --accents: each note of the demo's corpus gets the velocity of its place in
the bar (a player's stress), read back from the MIDI files it writes; without it every note keeps
the source's velocity."""

import subprocess
import sys

from conftest import ROOT

from abcscribe.core.midi import read_midi

CORPUS = str(ROOT / "examples" / "corpus.py")


def _write(out, *args):
    return subprocess.run([sys.executable, CORPUS, "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120)


def _velocities(path):
    """(position in its bar in ticks, the bar's Meter, velocity) for every note."""
    piece = read_midi(path)
    starts = piece.bar_starts()
    out = []
    for voice in piece.voices:
        for n in voice.notes:
            bar = max(s for s in starts if s <= n.start)
            m = piece.meter_at(n.start)
            out.append((n.start - bar, m, n.velocity))
    return out


def test_accents_stress_each_bars_first_beat_and_its_beats(tmp_path):
    # O'Neill's first two tunes (2/4, one with a pickup) and one in 6/8 (the 801st)
    meters = []
    for i, args in enumerate((["--pieces", "2"], ["--pieces", "1", "--skip-pieces", "800"])):
        plain, stressed = tmp_path / f"plain{i}", tmp_path / f"stressed{i}"
        assert _write(plain, *args).returncode == 0
        done = _write(stressed, *args, "--accents", "105,95,80")
        assert done.returncode == 0, done.stderr
        for mid in sorted(stressed.glob("*.mid")):
            assert {v for _, _, v in _velocities(plain / mid.name)} == {80}
            notes = _velocities(mid)
            meter = notes[0][1]
            meters.append(f"{meter.numerator}/{meter.denominator}")
            eighth = meter.bar_ticks // meter.numerator if meter.denominator == 8 else None
            beat = 3 * eighth if eighth else meter.bar_ticks // meter.numerator
            for pos, _, vel in notes:
                assert vel == (105 if pos == 0 else 95 if pos % beat == 0 else 80), (mid.name, pos, vel)
            assert {105, 95, 80} <= {v for _, _, v in notes}, mid.name
    assert meters == ["2/4", "2/4", "6/8"]


def test_bad_accents_are_a_usage_error(tmp_path):
    for bad in ("105,95", "a,b,c", "105,95,200"):
        done = _write(tmp_path, "--pieces", "1", "--accents", bad)
        assert done.returncode == 2 and "--accents takes three velocities" in done.stderr, bad
        assert not list(tmp_path.glob("*.mid"))
