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


def _heard_from(text: str, sure: float = 0.95):
    """What a perfect ear hears of ``text``: each note's onset, pitch and end, ``sure`` sure."""
    from abcscribe.core.listen import Heard

    piece, _ = read_abc(text)
    return [Heard(piece.seconds(n.start), n.pitch, sure, piece.seconds(n.end))
            for v in piece.voices for n in v.notes]  # fmt: skip


def _sounding(text: str):
    piece, _ = read_abc(text)
    return sorted((round(piece.seconds(n.start), 3), n.pitch) for v in piece.voices for n in v.notes)


def test_revise_keeps_the_texts_frame_and_writes_the_notes_heard():
    from abcscribe.core.listen import Heard, revise

    truth = TUNE.format(key="D", body="d2 fe dcBA | B2 AF D4")
    heard = _heard_from(truth)
    heard.append(Heard(0.0, 86, 0.5, 0.5))  # a faint octave ghost over the first note
    # what a small LM writes: tempo 5 % fast, one pitch wrong (g for f), one note missing (the
    # A before the bar line), one note nobody played (an extra E)
    written = TUNE.format(key="D", body="d2 ge dcB2 | B2 AF DE D2").replace("Q:1/4=120", "Q:1/4=126")
    written = written.replace("V:1", 'V:1 name="Violin"').replace("program 0", "program 40")
    revised = revise(written, heard)
    assert _sounding(revised) == _sounding(truth)
    piece, warns = read_abc(revised)
    assert not warns and piece.bpm == 120 and piece.key.fifths == 2
    assert (piece.voices[0].program, piece.voices[0].name) == (40, "Violin")
    assert (piece.meter.numerator, piece.meter.denominator) == (4, 4)
    # one note at a time, as written: no chord from the ghost, no overlap
    notes = piece.voices[0].notes
    assert all(a.end <= b.start for a, b in zip(notes, notes[1:]))


def test_revise_puts_added_notes_in_the_voice_nearest_in_pitch():
    from abcscribe.core.listen import revise

    two = ("X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1\n%%MIDI program 40\ne2 d2 c4 |]\n"
           "V:2\n%%MIDI program 42\nC,2 D,2 E,4 |]\n")  # fmt: skip
    heard = _heard_from(two)
    without_bass_note = two.replace("C,2 D,2 E,4", "C,2 z2 E,4")
    revised = revise(without_bass_note, heard)
    piece, _ = read_abc(revised)
    assert [n.pitch for n in piece.voices[1].notes] == [48, 50, 52]
    assert [n.pitch for n in piece.voices[0].notes] == [76, 74, 72]
    assert [v.program for v in piece.voices] == [40, 42]


def test_revise_leaves_texts_without_notes_and_unsure_ears_alone():
    from abcscribe.core.listen import revise

    truth = TUNE.format(key="C", body="CDEF GABc")
    assert revise("no music here", _heard_from(truth)) == "no music here"
    rests = TUNE.format(key="C", body="z8")
    assert revise(rests, _heard_from(truth)) == rests
    # notes heard too faintly are not added; written notes the ear did not hear go
    revised = revise(TUNE.format(key="C", body="CDEF z4"), _heard_from(truth, sure=0.5))
    assert _sounding(revised) == _sounding(TUNE.format(key="C", body="CDEF z4"))
    assert _sounding(revise(TUNE.format(key="C", body="CDEF GABc"), [])) == []  # nothing heard: nothing kept


def test_best_revision_keeps_the_candidate_whose_grid_the_heard_notes_fit():
    from abcscribe.core.listen import best_revision, revise, sure

    truth = TUNE.format(key="C", body="CDEF GABc")
    heard = _heard_from(truth)
    # the right notes at a tempo 17 % slow (beyond the refit): as written only the first onset
    # is within 40 ms of the heard ones
    slow = truth.replace("Q:1/4=120", "Q:1/4=100")
    # the right tempo and rhythm, every pitch wrong: as written nothing agrees
    wrong_notes = TUNE.format(key="C", body="EFGA Bcde")
    assert pick_by_ear([wrong_notes, slow], sure(heard)) == slow
    assert _sounding(revise(slow, heard)) != _sounding(truth)  # its grid misplaces the notes
    chosen = best_revision([wrong_notes, slow], heard)
    assert _sounding(chosen) == _sounding(truth)
    assert read_abc(chosen)[0].bpm == 120
    # garbage never wins; a single text is its own revision
    assert best_revision(["no music here", slow], heard) == revise(slow, heard)
    assert best_revision([truth], heard) == revise(truth, heard)


def test_best_revision_gives_each_voice_the_instrument_most_candidates_write():
    from abcscribe.core.listen import best_revision, instruments

    truth = ("X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1 name=\"Violin\"\n%%MIDI program 40\n"
             "e2 f2 e4 |]\nV:2 name=\"Flute\"\n%%MIDI program 73\nc2 d2 c4 |]\n")  # fmt: skip
    heard = _heard_from(truth)
    # the text the ear picks (every note right) names the upper voice's instrument wrongly; the
    # two others, a note off each, agree on the violin and the flute
    piano = truth.replace('"Violin"\n%%MIDI program 40', '"Piano"\n%%MIDI program 0')
    off = [truth.replace("e2 f2 e4", "e2 g2 e4"), truth.replace("c2 d2 c4", "c2 B,2 c4")]
    assert instruments([piano, *off]) == {2: [(40, "Violin"), (73, "Flute")]}
    chosen, _ = read_abc(best_revision([piano, *off], heard))
    assert [(v.program, v.name) for v in chosen.voices] == [(40, "Violin"), (73, "Flute")]
    assert [n.pitch for n in chosen.voices[0].notes] == [76, 77, 76]
    # a vote among texts of another voice count leaves the texts' own instruments
    solo = "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1 name=\"Oboe\"\n%%MIDI program 68\nc8 |]\n"
    assert instruments([piano, solo, solo]) == {2: [(0, "Piano"), (73, "Flute")], 1: [(68, "Oboe")]}
    assert [v.program for v in read_abc(best_revision([piano], heard))[0].voices] == [0, 73]


def test_revise_gives_each_voice_of_an_ensemble_the_family_its_notes_are_heard_in():
    from abcscribe.core.listen import revise

    text = ("X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1 name=\"Piano\"\n%%MIDI program 0\ne2 f2 e4 |]\n"
            "V:2 name=\"Piano\"\n%%MIDI program 0\nc2 d2 c4 |]\n")  # fmt: skip
    # the upper voice's notes heard as strings (family 5), the lower one's as pipes (family 9)
    heard = [h._replace(family=5 if h.pitch >= 76 else 9) for h in _heard_from(text)]
    votes = {2: [(0, "Piano"), (0, "Piano")], 1: [(73, "Flute")]}
    piece, _ = read_abc(revise(text, heard, instruments=votes))
    # a family a candidate wrote gets that candidate's instrument; another, its first GM program
    assert [(v.program, v.name) for v in piece.voices] == [(40, "Violin"), (73, "Flute")]
    assert [n.pitch for n in piece.voices[0].notes] == [76, 77, 76]
    # a voice heard in its own family keeps its instrument; a solo always does (its instrument
    # is the whole clip's, which the language model hears); nothing told: as written
    same = [h._replace(family=0) for h in _heard_from(text)]
    assert [v.program for v in read_abc(revise(text, same))[0].voices] == [0, 0]
    solo = "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1\n%%MIDI program 0\ne2 f2 e4 |]\n"
    strings = [h._replace(family=5) for h in _heard_from(solo)]
    assert read_abc(revise(solo, strings))[0].voices[0].program == 0
    assert [v.program for v in read_abc(revise(text, _heard_from(text)))[0].voices] == [0, 0]


def test_fit_tempo_finds_the_grid_the_onsets_fall_on():
    from abcscribe.core.listen import fit_tempo

    onsets = [i * 60 / 132 / 2 for i in range(16)]  # eighth notes at 132
    assert fit_tempo(126, onsets, 0.06) == 132
    assert fit_tempo(132, onsets, 0.06) == 132
    assert fit_tempo(100, onsets, 0.06) in range(94, 107)  # never outside the spread
    assert fit_tempo(120, [], 0.06) == 120


def test_revise_gives_simultaneous_added_notes_a_voice_each():
    from abcscribe.core.listen import Heard, revise

    truth = ("X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1\n%%MIDI program 40\ne2 f2 e4 |]\n"
             "V:2\n%%MIDI program 41\nc2 e2 c4 |]\n")  # fmt: skip
    heard = [h._replace(sure=0.95 if h.pitch == 77 else 0.9) for h in _heard_from(truth)]
    # both voices' second notes missing; the alto's (e) is nearer the soprano's pitches
    revised = revise(truth.replace("e2 f2 e4", "e2 z2 e4").replace("c2 e2 c4", "c2 z2 c4"), heard)
    piece, _ = read_abc(revised)
    assert [n.pitch for n in piece.voices[0].notes] == [76, 77, 76]
    assert [n.pitch for n in piece.voices[1].notes] == [72, 76, 72]


def test_revise_deals_notes_starting_together_to_the_voices_in_order_of_pitch():
    from abcscribe.core.listen import revise

    truth = ("X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1\n%%MIDI program 40\nc2 B2 A2 G2 | A2 B2 c4 |]\n"
             "V:2\n%%MIDI program 42\nE2 F2 E2 D2 | C2 D2 E4 |]\n")  # fmt: skip
    heard = _heard_from(truth)
    # the LM heard both lines but swapped them on the third beat, and wrote the soprano's
    # second bar an octave low: the ear hears the notes, the voices take them in pitch order
    written = truth.replace("c2 B2 A2 G2", "c2 B2 E2 G2").replace("E2 F2 E2 D2", "E2 F2 A2 D2")
    written = written.replace("A2 B2 c4", "A,2 B,2 C4")
    piece, _ = read_abc(revise(written, heard))
    assert [n.pitch for n in piece.voices[0].notes] == [72, 71, 69, 67, 69, 71, 72]
    assert [n.pitch for n in piece.voices[1].notes] == [64, 65, 64, 62, 60, 62, 64]
    assert [v.program for v in piece.voices] == [40, 42]
