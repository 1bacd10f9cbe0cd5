"""core.reward: the seed's reward (tempo, metre, pitch, instrument) and the note-level metrics.

Pieces are built with core.notes, or written as ABC and read back the way `ppo` and `score` do."""

import math
import os
import random

import pytest

from abcscribe.core import reward as R
from abcscribe.core.errors import UserError
from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

Q = TPQ  # a quarter note
E = TPQ // 2  # an eighth


def melody(pitches, dur=E, start=0, program=0, drum=False):
    notes, t = [], start
    for p in pitches:
        if isinstance(p, tuple):  # a chord
            notes += [Note(q, t, dur) for q in p]
        elif p is not None:  # None is a rest
            notes.append(Note(p, t, dur))
        t += dur
    return Voice(notes=notes, program=program, drum=drum)


def piece(*voices, bpm=120.0, metre=(4, 4)):
    return Piece(voices=list(voices), tempos=[Tempo(0, bpm)], meters=[Meter(0, *metre)])


TUNE = [67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 67, 69, 71, None, 71, 72]
BASS = [43, None, 50, None, 47, None, 50, None, 43, None, 50, None, 47, None, 43, None]
CHORDS = [(55, 59, 62), None, (55, 60, 64), None, (54, 57, 62), None, (55, 59, 62), None]


def trio(**kw):
    return piece(
        melody(TUNE, program=40),  # Violin
        melody(BASS, program=33),  # Electric Bass (finger)
        melody(CHORDS, dur=Q, program=0),  # Acoustic Grand Piano
        **kw,
    )


# ---- identical pieces and components reacting alone -----------------------------------------


def test_identical_pieces_score_reward_one_with_perfect_note_metrics():
    s = R.score_pieces(trio(), trio())
    assert s.reward == 1.0 and s.loss == 0.0
    assert (s.pitch, s.metre, s.tempo, s.instrument, s.rhythm) == (0, 0, 0, 0, 0)
    assert (s.note_f1, s.note_precision, s.note_recall, s.note_f1_offset) == (1, 1, 1, 1)


def test_wrong_tempo_moves_only_tempo():
    s = R.score_pieces(trio(bpm=120), trio(bpm=100))
    assert s.tempo > 0 and s.reward < 1
    assert (s.pitch, s.metre, s.instrument, s.rhythm) == (0, 0, 0, 0)
    # the reward is the seed's weighted sum: only the tempo term is missing
    assert s.loss == pytest.approx(0.15 * s.tempo)


def test_wrong_metre_moves_only_metre():
    s = R.score_pieces(trio(metre=(4, 4)), trio(metre=(3, 4)))
    assert s.metre > 0.3
    assert (s.pitch, s.tempo, s.instrument, s.rhythm) == (0, 0, 0, 0)
    assert s.loss == pytest.approx(0.15 * s.metre)


def test_swapped_instrument_moves_only_instrument():
    ref = trio()
    pred = trio()
    pred.voices[0].program = 71  # Clarinet instead of Violin
    s = R.score_pieces(ref, pred)
    assert s.instrument == pytest.approx(R.voice_instrument_loss(40, 71) / 3)
    assert (s.pitch, s.metre, s.tempo, s.rhythm) == (0, 0, 0, 0)
    assert s.note_f1 == 1.0


def test_instruments_exchanged_between_voices_cost_instrument_not_pitch():
    ref = trio()
    pred = trio()
    pred.voices[0].program, pred.voices[1].program = 33, 40
    s = R.score_pieces(ref, pred)
    assert s.pitch == 0 and s.instrument > 0


def test_reordered_voice_list_changes_nothing():
    ref = trio()
    pred = trio()
    pred.voices = [pred.voices[2], pred.voices[0], pred.voices[1]]
    assert R.score_pieces(ref, pred).reward == 1.0


def test_wrong_note_moves_pitch_and_note_metrics_not_the_rest():
    ref = trio()
    pred = trio()
    pred.voices[0].notes[3].pitch += 2
    s = R.score_pieces(ref, pred)
    # one substituted unit out of 15 in one voice of three
    assert s.pitch == pytest.approx(1 / 15 / 3)
    assert (s.metre, s.tempo, s.instrument, s.rhythm) == (0, 0, 0, 0)
    assert s.note_f1 < 1


def test_wrong_rhythm_moves_rhythm_and_note_f1_but_not_pitch():
    ref = piece(melody(TUNE, dur=E))
    pred = piece(melody(TUNE, dur=Q))  # right notes, every onset but the first misplaced
    s = R.score_pieces(ref, pred)
    assert s.pitch == 0 and s.reward == 1.0  # the seed's reward is blind to rhythm...
    # half the quarter-note onsets fall on an eighth-note onset position, none on the right note
    assert s.rhythm > 0.4 and s.note_f1 < 0.3  # ...the extra metrics are not
    weighted = R.score_pieces(ref, pred, weights={"pitch": 0.5, "rhythm": 0.5})
    assert weighted.reward == pytest.approx(1 - 0.5 * s.rhythm)


# ---- pitch: Levenshtein over chord units, voice assignment ------------------------------------


def test_chord_is_one_unit():
    ref = piece(melody([(60, 64, 67), 62, 64]))
    wrong_chord_note = piece(melody([(60, 63, 67), 62, 64]))
    assert R.pitch_loss(ref, wrong_chord_note) == pytest.approx(1 / 3)
    split = piece(melody([60, 64, 67, 62, 64]))  # the chord arpeggiated: 3 units for 1
    assert R.pitch_loss(ref, split) == pytest.approx(3 / 5)


def test_note_order_within_a_voice_does_not_matter():
    ordered = trio()
    shuffled = trio()
    for v in shuffled.voices:
        random.Random(1).shuffle(v.notes)
    assert R.score_pieces(ordered, shuffled).reward == 1.0
    assert R.score_pieces(shuffled, ordered).rhythm == 0.0


def test_missing_and_extra_voices_cost_a_full_voice_each():
    two = piece(melody(TUNE, program=40), melody(BASS, program=33))
    one = piece(melody(TUNE, program=40))
    assert R.pitch_loss(two, one) == pytest.approx(0.5)
    assert R.pitch_loss(one, two) == pytest.approx(0.5)
    assert R.instrument_loss(two, one) == pytest.approx(0.5)


def test_voices_matched_by_least_distance_not_order():
    a, b = melody(TUNE), melody(BASS)
    b_noisy = melody(BASS[:-2] + [44, 45])
    assert R.pitch_loss(piece(a, b), piece(b_noisy, a)) == pytest.approx(
        R.voice_pitch_loss(R._VoiceView(b, TPQ).chords, R._VoiceView(b_noisy, TPQ).chords) / 2
    )


@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 3), (4, 4), (2, 4), (4, 2), (5, 3), (7, 7)])
def test_assignment_is_optimal_like_scipy(rows, cols):
    from scipy.optimize import linear_sum_assignment
    import numpy as np

    rng = random.Random(rows * 10 + cols)
    for _ in range(20):
        cost = [[rng.random() for _ in range(cols)] for _ in range(rows)]
        pairs = R.assign(cost)
        r, c = linear_sum_assignment(np.array(cost))
        assert len(pairs) == min(rows, cols)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        assert sum(cost[i][j] for i, j in pairs) == pytest.approx(float(np.array(cost)[r, c].sum()))


# ---- tempo and metre curves --------------------------------------------------------------


def test_tempo_curve_shape():
    assert R.tempo_loss(120, 120) == 0.0
    assert R.tempo_loss(120, 125) == pytest.approx(0.05)  # linear below 10 BPM
    assert R.tempo_loss(120, 115) == R.tempo_loss(120, 125)  # symmetric
    # continuous at 10 BPM
    assert R.tempo_loss(120, 130 - 1e-9) == pytest.approx(R.tempo_loss(120, 130 + 1e-9), abs=1e-8)
    # strictly increasing until capped at 1, and capped
    points = [R.tempo_loss(120, 120 + d) for d in (0, 1, 5, 9.9, 10, 10.1, 20, 30, 40, 50)]
    assert all(a < b for a, b in zip(points, points[1:]))
    assert R.tempo_loss(120, 180) == 1.0 and R.tempo_loss(120, 400) == 1.0
    # exponential beyond 10 BPM: equal steps multiply the loss by the same factor
    assert R.tempo_loss(120, 150) / R.tempo_loss(120, 140) == pytest.approx(
        R.tempo_loss(120, 140) / R.tempo_loss(120, 130))
    assert R.tempo_loss(120, 0) == 1.0 and R.tempo_loss(120, float("nan")) == 1.0


def test_metre_curve_shape():
    assert R.metre_loss((4, 4), (4, 4)) == 0.0
    same_bar = [R.metre_loss((4, 4), (2, 2)), R.metre_loss((6, 8), (3, 4))]
    assert all(0 < x < 0.15 for x in same_bar)  # partial credit: same bar length
    three_four = R.metre_loss((3, 4), (4, 4))
    assert three_four > 4 * max(same_bar)  # much worse
    assert R.metre_loss((4, 4), (3, 4)) == three_four
    # numerator further off -> strictly worse; everything capped at 1
    ladder = [R.metre_loss((4, 4), (n, 4)) for n in (4, 5, 6, 7, 9, 12)]
    assert all(a < b for a, b in zip(ladder, ladder[1:]))
    grid = [(n, d) for n in range(1, 33) for d in (1, 2, 4, 8, 16, 32, 64)]
    assert max(R.metre_loss((4, 4), m) for m in grid) <= 1.0
    assert R.metre_loss((4, 4), (64, 1024)) == 1.0  # every part far off: capped at 1
    assert R.metre_loss((4, 4), Meter(0, 0, 4)) == 1.0
    # linear for small differences: half the bar-length error, half the loss
    assert R._lin_exp(0.1, *R.METRE_PARTS["bar"]) == pytest.approx(
        R._lin_exp(0.2, *R.METRE_PARTS["bar"]) / 2)


def test_instrument_grades():
    violin, viola, trumpet = 40, 41, 56
    assert R.voice_instrument_loss(violin, violin) == 0
    assert R.voice_instrument_loss(violin, viola) == R.FAMILY_LOSS
    assert R.voice_instrument_loss(violin, trumpet) >= R.OTHER_FAMILY_LOSS
    # across families, closer names cost less: Electric Guitar (jazz) is nearer Electric Bass
    # (finger) than Tuba is
    assert R.voice_instrument_loss(33, 26) < R.voice_instrument_loss(33, 58)
    assert R.voice_instrument_loss(0, 0, True, True) == 0
    assert R.voice_instrument_loss(0, 0, True, False) > R.FAMILY_LOSS


# ---- note metrics agree with mir_eval ---------------------------------------------------


def test_note_metrics_agree_with_mir_eval():
    import warnings

    import numpy as np
    from mir_eval.transcription import precision_recall_f1_overlap

    rng = random.Random(7)
    for _ in range(40):
        ref = [(rng.randint(60, 63), round(0.2 + 3 * rng.random(), 3)) for _ in range(rng.randint(1, 30))]
        ref = [(p, on, on + rng.choice([0.05, 0.2, 0.6])) for p, on in ref]
        est = [(p, on + rng.gauss(0, 0.04), off + rng.gauss(0, 0.08)) for p, on, off in ref
               if rng.random() < 0.8]
        est += [(rng.randint(60, 63), x, x + 0.2) for x in (3 * rng.random() for _ in range(3))]
        est = [(p, on, max(off, on + 0.01)) for p, on, off in est]

        def arrays(notes):
            return (np.array([[on, off] for _, on, off in notes]),
                    np.array([440 * 2 ** ((p - 69) / 12) for p, _, _ in notes]))

        for ratio in (None, 0.2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, r, f, _ = precision_recall_f1_overlap(*arrays(ref), *arrays(est), offset_ratio=ratio)
            m = R.note_matches(ref, est, offset_ratio=ratio)
            assert m / len(est) == pytest.approx(p) and m / len(ref) == pytest.approx(r)


def test_note_metrics_use_each_tempo_map():
    ref = piece(melody(TUNE, dur=E), bpm=120)
    slow = piece(melody(TUNE, dur=Q), bpm=240)  # written twice as long, played twice as fast
    m = R.note_metrics(ref, slow)
    assert m["note_f1"] == 1.0 and m["note_f1_offset"] == 1.0
    assert R.score_pieces(ref, slow).tempo == 1.0  # though Q: is far off


def test_note_metrics_tolerance_is_50_ms():
    ref = piece(melody([60, 62], dur=Q), bpm=60)  # quarters of 1 s
    for shift_s, hit in ((0.04, True), (0.06, False)):
        shifted = piece(melody([60, 62], dur=Q, start=round(shift_s * TPQ)), bpm=60)
        assert (R.note_metrics(ref, shifted)["note_recall"] == 1.0) is hit


# ---- weights and degenerate inputs -------------------------------------------------------


def test_parse_weights():
    assert R.parse_weights("pitch=0.5,metre=0.15,tempo=0.15,instrument=0.2") == R.DEFAULT_WEIGHTS
    assert R.parse_weights("pitch=1")["tempo"] == 0.0
    for bad in ("pitch", "pitch=x", "volume=1", "pitch=-1", "pitch=0"):
        with pytest.raises(UserError):
            R.parse_weights(bad)


def test_weights_are_normalised():
    ref, pred = trio(bpm=120), trio(bpm=90)
    only_tempo = R.score_pieces(ref, pred, weights={"tempo": 3})
    assert only_tempo.loss == pytest.approx(only_tempo.tempo)


def test_empty_prediction_scores_zero():
    s = R.score_pieces(trio(), Piece())
    assert s.reward == 0.0 and s.loss == 1.0 and s.note_f1 == 0.0
    assert R.score_pieces(trio(), None, parse_warnings=3).parse_warnings == 3


def test_no_note_metrics_leaves_them_out():
    s = R.score_pieces(trio(), trio(bpm=100), note_metrics=False)
    assert s.note_f1 is None and s.note_f1_offset is None
    assert s.reward == R.score_pieces(trio(), trio(bpm=100)).reward


def test_values_stay_in_unit_interval_on_random_pieces():
    rng = random.Random(3)
    for _ in range(200):
        def rand_piece():
            vs = [melody([rng.choice([None, rng.randint(30, 90), (60, 64)]) for _ in range(rng.randint(0, 20))],
                         dur=rng.choice([E, Q, 1]), program=rng.randint(0, 127), drum=rng.random() < 0.1)
                  for _ in range(rng.randint(0, 7))]
            return piece(*vs, bpm=rng.choice([1, 60, 120, 500, -3, math.inf]),
                         metre=(rng.randint(0, 13), rng.choice([1, 2, 4, 8, 16])))
        s = R.score_pieces(rand_piece(), rand_piece())
        for k, v in s.as_dict().items():
            if k != "parse_warnings":
                assert 0.0 <= v <= 1.0, (k, v)
        assert s.reward == pytest.approx(1 - s.loss)


# ---- from ABC text, as `ppo` and `abcscribe score` call it ---------------------------------

REF_ABC = """X:1
T:Two voices
M:4/4
L:1/8
Q:1/4=96
K:G
V:1 name="Violin"
%%MIDI program 40
GABc dedB|dcBA G2 z2|[GBd]4 B2 AG|FGAF G4|]
V:2 name="Electric Bass (finger)"
%%MIDI program 33
G,4 D,4|G,4 D,4|G,4 C,4|D,4 G,4|]
"""


def swap_voice_blocks(abc: str) -> str:
    head, v1 = abc.split("V:1", 1)
    v1, v2 = v1.split("V:2", 1)
    return head + "V:2" + v2.rstrip("\n") + "\nV:1" + v1


def test_abc_identical_and_reordered_voices_score_one():
    assert R.score(REF_ABC, REF_ABC).reward == 1.0
    reordered = swap_voice_blocks(REF_ABC)
    assert reordered != REF_ABC
    s = R.score(REF_ABC, reordered)
    assert s.reward == 1.0 and s.note_f1 == 1.0


def test_abc_each_field_moves_its_own_component():
    tempo = R.score(REF_ABC, REF_ABC.replace("Q:1/4=96", "Q:1/4=130"))
    assert tempo.tempo > 0.2 and (tempo.pitch, tempo.metre, tempo.instrument) == (0, 0, 0)
    metre = R.score(REF_ABC, REF_ABC.replace("M:4/4", "M:2/2"))
    assert 0 < metre.metre < 0.15 and (metre.pitch, metre.tempo, metre.instrument) == (0, 0, 0)
    instr = R.score(REF_ABC, REF_ABC.replace("%%MIDI program 40", "%%MIDI program 41")
                    .replace('"Violin"', '"Viola"'))
    assert instr.instrument == pytest.approx(R.FAMILY_LOSS / 2)
    assert (instr.pitch, instr.tempo, instr.metre) == (0, 0, 0)
    pitch = R.score(REF_ABC, REF_ABC.replace("GABc dedB", "GABc dedc"))
    assert 0 < pitch.pitch < 0.1 and (pitch.tempo, pitch.metre, pitch.instrument) == (0, 0, 0)


def test_abc_tempo_is_read_in_quarter_notes_whatever_q_says():
    dotted = REF_ABC.replace("Q:1/4=96", "Q:3/8=64")  # 64 dotted quarters = 96 quarters
    assert R.score(REF_ABC, dotted).tempo == 0.0
    halves = REF_ABC.replace("Q:1/4=96", "Q:1/2=48")
    assert R.score(REF_ABC, halves).tempo == 0.0


def test_abc_in_prose_or_fences_is_extracted():
    chatty = f"Sure! Here is the transcription:\n\n```abc\n{REF_ABC}```\n\nI hope this helps."
    assert R.score(REF_ABC, chatty).reward == 1.0
    no_fence = f"The tune you played is:\n\n{REF_ABC}\nLet me know if you would like any changes."
    assert R.score(REF_ABC, no_fence).reward == 1.0


@pytest.mark.parametrize("garbage", [
    "", "   \n", "I could not transcribe this recording.", "blah blah blah",
    "X:1\nT:Half a header\nM:4", "ababab " * 200, "|||||::::[[[[", "```\n```",
    "\x00\x01\x02", "K:" * 500, "\ufffd" * 50,
])
def test_garbage_predictions_score_zero_never_raise(garbage):
    s = R.score(REF_ABC, garbage)
    assert s.reward == 0.0 and s.loss == 1.0
    assert s.parse_warnings >= 1


def test_prediction_leaving_out_the_tempo_or_metre_gets_no_credit_for_it():
    no_q = R.score(REF_ABC, REF_ABC.replace("Q:1/4=96\n", ""))
    assert no_q.tempo == 1.0 and no_q.metre == 0.0 and no_q.pitch == 0.0
    no_m = R.score(REF_ABC, REF_ABC.replace("M:4/4\n", ""))
    assert no_m.metre == 1.0 and no_m.tempo == 0.0


@pytest.mark.parametrize("bad_ref", ["", "no music here at all", "X:1\nT:t\nM:4/4\nK:C\n"])
def test_unreadable_reference_is_a_user_error(bad_ref):
    with pytest.raises(UserError):
        R.score(bad_ref, REF_ABC)


def test_score_many_equals_score_per_pair():
    preds = [REF_ABC, REF_ABC.replace("Q:1/4=96", "Q:1/4=100"), "garbage", swap_voice_blocks(REF_ABC)]
    many = R.score_many([(REF_ABC, p) for p in preds], note_metrics=True)
    assert many == [R.score(REF_ABC, p) for p in preds]


def test_summary_has_mean_median_and_an_interval_around_the_mean():
    recs = [{"reward": v} for v in (0.2, 0.4, 0.6, 0.8, 1.0)] + [{"reward": None}]
    st = R.summarize(recs, metrics=["reward", "pitch"])["reward"]
    assert st["n"] == 5 and st["mean"] == pytest.approx(0.6) and st["median"] == pytest.approx(0.6)
    lo, hi = st["ci95"]
    assert 0.2 <= lo < 0.6 < hi <= 1.0


# ---- corpus tunes and fuzzing --------------------------------------------------------------


def corpus_tunes(limit):
    """ABC tunes from music21's installed corpus (read as text: music21 is not imported)."""
    import importlib.util
    from pathlib import Path

    root = Path(importlib.util.find_spec("music21").origin).parent / "corpus"
    tunes = []
    for f in sorted(root.glob("*/*.abc")):
        text = f.read_text(encoding="utf-8", errors="replace")
        for chunk in text.split("\nX:")[1:]:
            tunes.append("X:" + chunk)
            if len(tunes) >= limit:
                return tunes
    return tunes


FUZZ = {"generated": 0, "mutated": 0, "readable": 0, "corpus": 0}


def test_corpus_tunes_score_one_against_themselves():
    tunes = corpus_tunes(60)
    assert len(tunes) == 60
    for t in tunes:
        try:
            R.read_reference(t)
        except UserError:
            continue
        FUZZ["corpus"] += 1
        assert R.score(t, t).reward == 1.0
    assert FUZZ["corpus"] >= 50


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ABC_CHARS = "ABCDEFGabcdefgz^_=,'/|[]:2348() \n<>-~.\"xyKMLQVT!%"


@st.composite
def generated_pieces(draw):
    nvoices = draw(st.integers(1, 4))
    voices = []
    for _ in range(nvoices):
        pitches = draw(st.lists(st.one_of(st.none(), st.integers(36, 96),
                                          st.tuples(st.integers(48, 72), st.integers(73, 84))),
                                min_size=1, max_size=24))
        if all(p is None for p in pitches):
            pitches[0] = 60
        dur = draw(st.sampled_from([TPQ // 4, TPQ // 3, TPQ // 2, TPQ, 3 * TPQ // 2]))
        voices.append(melody(pitches, dur=dur, program=draw(st.integers(0, 127)),
                             drum=draw(st.booleans()) and nvoices > 1))
    metre = draw(st.sampled_from([(4, 4), (3, 4), (6, 8), (2, 2), (5, 4), (7, 8)]))
    return piece(*voices, bpm=float(draw(st.integers(30, 240))), metre=metre)


@st.composite
def mutated(draw, text):
    """Apply a few edits: delete a span, insert ABC-ish characters, duplicate a span, truncate."""
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "truncate"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.text(alphabet=ABC_CHARS, max_size=20)) + text[i:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] * draw(st.integers(1, 5)) + text[j:]
        else:
            text = text[:i]
    return text


def check_in_range(s):
    for k, v in s.as_dict().items():
        if v is None:
            continue
        assert not (isinstance(v, float) and math.isnan(v)), k
        if k != "parse_warnings":
            assert 0.0 <= v <= 1.0, (k, v)
    assert s.reward == pytest.approx(1 - s.loss)


def check_self_score(x):
    try:
        R.read_reference(x)
    except UserError:
        return
    FUZZ["readable"] += 1
    assert R.score(x, x).reward == 1.0


# ABCSCRIBE_FUZZ_EXAMPLES=2000 for a longer run
FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("ABCSCRIBE_FUZZ_EXAMPLES", 150)), deadline=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))


@FUZZ_SETTINGS
@given(generated_pieces(), st.data())
def test_fuzz_generated_pieces_and_their_mutations(p, data):
    from abcscribe.core.abc import write_abc

    ref = write_abc(p)
    FUZZ["generated"] += 1
    check_self_score(ref)
    pred = data.draw(mutated(ref))
    FUZZ["mutated"] += 1
    check_in_range(R.score(ref, pred))
    check_self_score(pred)


@FUZZ_SETTINGS
@given(st.data())
def test_fuzz_mutated_corpus_tunes(data):
    tunes = _CORPUS or _CORPUS.extend(corpus_tunes(40)) or _CORPUS
    ref = data.draw(st.sampled_from(tunes))
    pred = data.draw(mutated(ref))
    FUZZ["mutated"] += 1
    check_in_range(R.score(ref, pred))
    check_self_score(pred)


@FUZZ_SETTINGS
@given(st.text(max_size=300), st.text(alphabet=ABC_CHARS, max_size=300))
def test_fuzz_arbitrary_text_never_raises(any_text, abcish):
    for x in (any_text, abcish, "X:1\nK:C\n" + abcish):
        FUZZ["mutated"] += 1
        check_in_range(R.score(REF_ABC, x))
        check_self_score(x)


_CORPUS: list = []


def test_fuzz_counts():
    """Runs after the fuzz tests (file order): they covered what they claim."""
    print(f"\nfuzzed: {FUZZ}")
    assert FUZZ["generated"] >= 100 and FUZZ["mutated"] >= 500 and FUZZ["readable"] >= 200
