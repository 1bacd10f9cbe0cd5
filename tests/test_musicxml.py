"""MusicXML for any ABC: `abc2midi --format musicxml`, opened by MuseScore 3 with its parts'
names and instruments, the same bytes on every run and from either ABC layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import need_tool  # noqa: E402

from abcscribe.core.abc import read_abc, write_abc  # noqa: E402
from abcscribe.core.musicxml import write_musicxml  # noqa: E402
from abcscribe.core.notes import Meter, Note, Piece, Tempo, Voice  # noqa: E402

Q = 960


def chorale() -> Piece:
    """Four named voices, a meter change, a tempo change, a triplet and a held note under a
    moving line (two voices in one part)."""
    sop = Voice([Note(72, i * Q, Q) for i in range(8)], program=0, name="Soprano")
    alto = Voice([Note(67, 0, 4 * Q), Note(64, 4 * Q, Q // 3), Note(65, 4 * Q + Q // 3, Q // 3),
                  Note(67, 4 * Q + 2 * Q // 3, Q // 3), Note(69, 5 * Q, 3 * Q)],
                 program=73, name="Flute & \"Alto\"")
    bass = Voice([Note(48, 0, 8 * Q), Note(55, 0, Q), Note(52, Q, 2 * Q)], program=42,
                 name="Cello")
    return Piece([sop, alto, bass], tempos=[Tempo(0, 90), Tempo(4 * Q, 60)],
                 meters=[Meter(0, 4, 4), Meter(4 * Q, 2, 4)], title="A & B")


def test_parts_carry_names_instruments_and_programs():
    xml = write_musicxml(chorale()).decode()
    assert re.findall(r"<part-name>([^<]*)</part-name>", xml) == [
        "Soprano", "Flute &amp; \"Alto\"", "Cello"]
    assert re.findall(r"<instrument-name>([^<]*)</instrument-name>", xml) == [
        "Acoustic Grand Piano", "Flute", "Cello"]
    assert re.findall(r"<midi-program>(\d+)</midi-program>", xml) == ["1", "74", "43"]
    assert "<work-title>A &amp; B</work-title>" in xml
    assert "creator" not in xml and "encoding-date" not in xml
    assert "<actual-notes>3</actual-notes>" in xml  # the triplet
    assert "<beats>2</beats>" in xml  # the meter change
    assert '<sound tempo="60"/>' in xml
    assert "<voice>2</voice>" in xml and "<backup>" in xml  # the cello's two layers
    assert "<sign>F</sign>" in xml


def test_voices_and_interleaved_abc_give_the_same_bytes(cli, tmp_path):
    piece = chorale()
    outs = []
    for layout in ("voices", "interleaved"):
        abc = tmp_path / f"{layout}.abc"
        abc.write_text(write_abc(piece, layout=layout))
        for run in range(2):
            out = tmp_path / f"{layout}{run}.musicxml"
            cli("abc2midi", abc, "-o", out, check=True)  # the suffix picks the format
            outs.append(out.read_bytes())
    assert len(set(outs)) == 1
    cli("abc2midi", tmp_path / "voices.abc", "--format", "musicxml", check=True)
    assert (tmp_path / "voices.musicxml").read_bytes() == outs[0]
    bad = cli("abc2midi", tmp_path / "voices.abc", "--format", "pdf")
    assert bad.returncode != 0 and "--format" in bad.stderr and "Traceback" not in bad.stderr


def test_musicxml_of_abc_keeps_the_notes():
    piece = chorale()
    back, _ = read_abc(write_abc(piece))
    xml = write_musicxml(back).decode()
    assert xml.count("<pitch>") == sum(len(v.notes) for v in piece.voices) + xml.count(
        '<tie type="stop"/>')


def _mscore(xml: Path, tmp_path: Path) -> str:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
    pdf = tmp_path / (xml.stem + ".pdf")
    proc = subprocess.run(["mscore3", "-o", str(pdf), str(xml)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0 and pdf.exists(), proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_musescore_opens_our_musicxml_with_its_instruments(cli, tmp_path):
    need_tool("mscore3")
    from music21 import corpus

    mid = tmp_path / "bwv66.6.mid"
    corpus.parse("bach/bwv66.6").write("midi", fp=str(mid))
    abc = tmp_path / "bwv66.6.abc"
    cli("midi2abc", mid, "-o", tmp_path, "--layout", "interleaved", check=True)
    xml = tmp_path / "bwv66.6.musicxml"
    cli("abc2midi", abc, "-o", xml, check=True)
    (tmp_path / "chorale.musicxml").write_bytes(write_musicxml(chorale()))
    for path in (xml, tmp_path / "chorale.musicxml"):
        log = _mscore(path, tmp_path)
        assert "no instrument found" not in log.lower()
        assert "too many voices" not in log.lower()
    text = xml.read_text()
    assert re.findall(r"<part-name>([^<]*)</part-name>", text) == [
        "Soprano", "Alto", "Tenor", "Bass"]
