"""Choosing a transcription by ear (core.listen): among the texts a model could write, the one
whose notes (under any key signature) agree with the notes its encoder heard."""

from abcscribe.core.abc import read_abc
from abcscribe.core.listen import agreement, pick_by_ear, respellings, written_notes

TUNE = "X:1\nM:4/4\nL:1/8\nQ:1/4=120\nK:{key}\nV:1\n%%MIDI program 0\n{body} |]\n"


def test_respellings_keep_the_letters_and_the_tonic_where_a_mode_allows():
    text = TUNE.format(key="G", body="GABc dBGB")
    variants = respellings(text)
    assert variants[0] == text and len(variants) == 13  # its own, then six flats .. six sharps
    keys = [v.split("K:")[1].split("\n")[0] for v in variants]
    assert len(set(keys)) == 13
    assert "Gm" in keys and "Gmix" in keys and "Gdor" in keys  # G's own modes first
    assert all(v.split("K:")[1].split("\n", 1)[1] == text.split("K:")[1].split("\n", 1)[1] for v in variants)
    # under K:Gm the B sounds as B flat
    gm = next(v for v in variants if "K:Gm\n" in v)
    pitches = [n.pitch for n in read_abc(gm)[0].voices[0].notes]
    assert pitches[:4] == [67, 69, 70, 72]
    # no key, or an explicit signature: nothing to respell
    assert respellings(TUNE.format(key="none", body="GABc")) == [TUNE.format(key="none", body="GABc")]


def test_agreement_is_the_onset_f_measure_within_40_ms():
    heard = [(0.0, 60), (0.25, 62), (0.5, 64), (0.75, 65)]
    assert agreement(heard, heard) == 1.0
    assert agreement(heard, [(0.03, 60), (0.27, 62)]) == 2 * 2 / 6  # within 40 ms: matched
    assert agreement(heard, [(0.06, 60)]) == 0.0  # 60 ms late
    assert agreement(heard, [(0.0, 61)]) == 0.0  # wrong pitch
    assert agreement(heard, [(0.0, 60), (0.0, 60)]) == 2 * 1 / 6  # one heard note matches once
    assert agreement(heard, None) == -1.0 and agreement([], [(0.0, 60)]) == 0.0


def test_pick_by_ear_prefers_the_notes_heard_then_the_earliest_text():
    minor = TUNE.format(key="Gm", body="GABc dBGB")
    heard = written_notes(minor)
    wrong_key = TUNE.format(key="G", body="GABc dBGB")  # what a small LM writes: letters right
    wrong_rhythm = TUNE.format(key="Gm", body="G2Bc dBGB")
    chosen = pick_by_ear([wrong_rhythm, wrong_key], heard)
    assert chosen == TUNE.format(key="Gm", body="GABc dBGB")  # respelled, not a sample's rhythm
    # equal agreement: the first text in its own spelling
    assert pick_by_ear([wrong_rhythm, wrong_rhythm], written_notes(wrong_rhythm)) == wrong_rhythm
    # garbage never wins over a tune
    assert pick_by_ear(["no music here", wrong_key], heard).startswith("X:1")
