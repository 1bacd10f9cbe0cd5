"""`abcscribe pretrain` and the note encoder it makes (`--encoder notes:DIR`): it learns to hear
which pitches start and sound from rendered clips and their ABC, on melodies it never saw; the
composed model that reads it carries a copy, so the model folder works wherever it goes."""

import json
import random
import shutil

import numpy as np
import pytest
from conftest import write_jsonl

from abcscribe.core.abc import read_abc
from abcscribe.core.audio import render, write_audio

LETTERS = ["C", "D", "E", "F", "G", "A", "B", "c", "d", "e", "f", "g", "a", "b", "c'"]


def melody(rng: random.Random) -> str:
    """A random two-bar melody at 100 BPM: eighths and quarters, an instrument per tune."""
    notes, left = [], 16
    while left > 0:
        n = min(left, rng.choice([1, 1, 2]))
        notes.append(rng.choice(LETTERS) + ("2" if n == 2 else ""))
        left -= n
    program = rng.choice([0, 24, 40, 73])
    return (f"X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nV:1\n%%MIDI program {program}\n"
            + " ".join(notes) + " |]\n")  # fmt: skip


def clips(folder, n, seed):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        abc = melody(rng)
        path = folder / f"m{seed}-{i}.wav"
        write_audio(path, render(read_abc(abc)[0], sr=16000, engine="builtin"), 16000)
        records.append({"id": f"m{seed}-{i}", "audio": str(path), "offset": 0.0, "duration": 4.8,
                        "abc": abc, "messages": [{"role": "assistant", "content": abc}]})  # fmt: skip
    return records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notes")
    train = write_jsonl(folder / "train.jsonl", clips(folder, 40, seed=1))
    val = write_jsonl(folder / "val.jsonl", clips(folder, 8, seed=2))
    from conftest import run_cli

    enc = folder / "encoder"
    p = run_cli("pretrain", "--data", train, "--eval-data", val, "-o", enc, "--steps", "250",
                "--family-batches", "200")
    assert p.returncode == 0, p.stderr
    return folder, train, val, enc, json.loads(p.stdout)


def test_pretrained_encoder_hears_notes_of_melodies_it_never_saw(trained):
    _, _, _, enc, summary = trained
    assert summary["steps"] == 250 and summary["train_clips"] == 40 and summary["val_clips"] == 8
    # onsets of the right pitch within 40 ms, on held-out melodies
    assert summary["val_onset_f1"] >= 0.8, summary
    assert summary["val_frame_f1"] >= 0.8, summary
    assert json.loads((enc / "pretrain.json").read_text()) == {k: v for k, v in summary.items() if k != "output_dir"}
    assert (enc / "config.json").is_file() and (enc / "model.safetensors").is_file()


def test_frame_notes_starts_one_note_per_sounding_onset_run():
    from abcscribe.core.note_encoder import LOWEST_PITCH, N_BINS, ONSET_THRESHOLD, frame_notes

    onset = np.zeros((40, N_BINS), np.float32)
    frame = np.zeros((40, N_BINS), np.float32)
    # a note at bin 24 from frame 5: its onset rises, dips below the threshold and rises again
    # while it sounds -> one note, at the first frame over the threshold
    onset[5:10, 24] = [0.4, 0.9, 0.5, 0.8, 0.35]
    frame[5:20, 24] = 0.9
    # the same pitch struck again after the onset fell away: a second note
    onset[22, 24] = 0.95
    frame[22:30, 24] = 0.9
    # its octave partial: a confident onset where the frame map holds no note -> none
    onset[6, 36] = 0.9
    frame[6:20, 36] = 0.3
    # a weak onset under the threshold -> none
    onset[12, 10], frame[12:20, 10] = 0.5, 0.9
    assert ONSET_THRESHOLD > 0.5
    assert frame_notes(onset, frame) == [(6, 24 + LOWEST_PITCH), (22, 24 + LOWEST_PITCH)]
    # a lower threshold hears the weak one; a looser frame threshold lets the partial in
    assert (12, 10 + LOWEST_PITCH) in frame_notes(onset, frame, 0.5)
    assert (6, 36 + LOWEST_PITCH) in frame_notes(onset, frame, frame_threshold=0.25)
    # no release: every dip of the onset ends a run
    assert len(frame_notes(onset, frame, release=ONSET_THRESHOLD)) == 3
    assert frame_notes(np.zeros((0, N_BINS)), np.zeros((0, N_BINS))) == []


def test_embed_with_the_note_encoder_marks_each_note_at_its_pitch_and_time(trained, cli, tmp_path):
    folder, _, val, enc, _ = trained
    p = cli("embed", val, "-o", tmp_path / "emb", "--encoder", f"notes:{enc}")
    assert p.returncode == 0, p.stderr
    from abcscribe.core.encoders import read_embeddings
    from abcscribe.core.note_encoder import LOWEST_PITCH, N_BINS, clip_targets

    found = total = 0
    for line in p.stdout.splitlines():
        rec = json.loads(line)
        emb, meta = read_embeddings(rec["embedding"])
        assert meta["encoder"] == f"notes:{enc}" and emb.shape[1] == 3 * N_BINS + 17 + 16
        onset_ref, _, _ = clip_targets(rec["abc"], len(emb))
        onsets = emb[:, :N_BINS]
        for t, pitch in zip(*np.nonzero(onset_ref)):
            total += 1
            window = onsets[max(0, t - 2) : t + 3]
            found += int(window.max(0).argmax() == pitch and window.max() > 0.5)
    assert total > 50 and found / total >= 0.8, (found, total, LOWEST_PITCH)


def test_features_from_stored_cqt_equal_features_from_the_audio(trained, cli, tmp_path):
    from abcscribe.core.models.features import FeatureSource
    from abcscribe.core.note_encoder import NoteEncoder
    from abcscribe.core.train.sft import read_records

    _, _, val, enc, _ = trained
    p = cli("embed", val, "-o", tmp_path / "cqt", "--encoder", "cqt")
    assert p.returncode == 0, p.stderr
    stored = [json.loads(x) for x in p.stdout.splitlines()]
    dim = NoteEncoder(enc).dim
    src = FeatureSource(f"notes:{enc}", dim, 50.0, 30.0)
    for rec, plain in zip(stored, read_records(val, warn=print)):
        a, b = src.get(rec), src.get(plain)
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_a_composed_model_carries_its_note_encoder(trained, cli, tmp_path):
    _, train, val, enc, _ = trained
    moved = tmp_path / "enc-elsewhere"
    shutil.copytree(enc, moved)
    model = tmp_path / "model"
    p = cli("sft", "--data", train, "--model", "tiny", "--encoder", f"notes:{moved}", "-o", model,
            "--max-steps", "0")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert (model / "note_encoder" / "model.safetensors").is_file()
    shutil.rmtree(moved)  # the model folder alone must be enough
    p = cli("transcribe", "--model", model, val, "--max-new-tokens", "8")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 8 and all(json.loads(x).get("error") is None for x in p.stdout.splitlines())


def test_what_the_encoder_hears_corrects_a_wrong_key(trained):
    """A text with the right letters under a wrong K: is respelled to the key the audio has."""
    from types import SimpleNamespace

    from abcscribe.core.listen import agreement, heard_notes, pick_by_ear, written_notes
    from abcscribe.core.models.features import FeatureSource
    from abcscribe.core.note_encoder import NoteEncoder
    from abcscribe.core.train.sft import read_records

    _, _, val, enc, _ = trained
    model = SimpleNamespace(features=FeatureSource(f"notes:{enc}", NoteEncoder(enc).dim, 50.0, 30.0))
    fixed = 0
    records = read_records(val, warn=print)
    for rec in records:
        heard = heard_notes(model, rec)
        truth = written_notes(rec["abc"])
        assert agreement(heard, truth) >= 0.7, rec["id"]  # it hears the melody it never saw
        wrong = rec["abc"].replace("K:C", "K:Eb")  # B, E and A flat where the audio has naturals
        chosen = pick_by_ear([wrong], heard)
        fixed += [p for _, p in written_notes(chosen)] == [p for _, p in truth]
    assert fixed >= len(records) - 1, fixed


def test_revising_by_ear_mends_wrong_and_missing_notes(trained):
    """A text with notes dropped and letters changed, revised against the real audio, sounds
    (nearly) what was played."""
    from types import SimpleNamespace

    from abcscribe.core.listen import agreement, listen, revise, written_notes
    from abcscribe.core.models.features import FeatureSource
    from abcscribe.core.note_encoder import NoteEncoder
    from abcscribe.core.train.sft import read_records

    _, _, val, enc, _ = trained
    model = SimpleNamespace(features=FeatureSource(f"notes:{enc}", NoteEncoder(enc).dim, 50.0, 30.0))
    before = after = 0.0
    records = read_records(val, warn=print)
    for rec in records:
        lines = rec["abc"].splitlines()
        tokens = lines[-1].split()  # the melody: notes, then "|]"
        # every third note a step too high, the last three notes left out (rests instead)
        for i in range(0, len(tokens) - 4, 3):
            if tokens[i][0] in "CDEFG":
                tokens[i] = chr(ord(tokens[i][0]) + 1) + tokens[i][1:]
        for i in range(len(tokens) - 4, len(tokens) - 1):
            tokens[i] = "z" + tokens[i][1:]
        wrong = "\n".join(lines[:-1] + [" ".join(tokens)]) + "\n"
        truth = written_notes(rec["abc"])
        before += agreement(truth, written_notes(wrong))
        after += agreement(truth, written_notes(revise(wrong, listen(model, rec))))
    before, after = before / len(records), after / len(records)
    assert after >= 0.85 and after >= before + 0.15, (before, after)  # measured: 0.71 -> 0.90


def test_ppo_rewards_what_transcribe_writes(trained):
    """For a model that hears, ppo scores a completion as transcribe writes it (revised by ear);
    with revise=False, and for a model that does not hear, as sampled."""
    from types import SimpleNamespace

    from abcscribe.core.listen import listen, revise
    from abcscribe.core.models.features import FeatureSource
    from abcscribe.core.note_encoder import NoteEncoder
    from abcscribe.core.train.ppo import by_ear, music_reward, safe_reward
    from abcscribe.core.train.sft import read_records

    _, _, val, enc, _ = trained
    model = SimpleNamespace(features=FeatureSource(f"notes:{enc}", NoteEncoder(enc).dim, 50.0, 30.0))
    rec = read_records(val, warn=print)[0]
    lines = rec["abc"].splitlines()
    # the right frame, every note a step too high
    wrong = "\n".join(lines[:-1] + ["".join(chr(ord(c) + 1) if c in "CDEFGcdef" else c for c in lines[-1])]) + "\n"
    written = by_ear(model)
    assert written(rec, wrong) == revise(wrong, listen(model, rec)) != wrong
    reward = music_reward()
    as_sampled = safe_reward(reward, rec["abc"], wrong, print)[0]
    as_written = safe_reward(reward, rec["abc"], wrong, print, lambda t: written(rec, t))[0]
    assert as_written == reward(rec["abc"], written(rec, wrong))[0]
    assert as_written >= as_sampled + 0.1, (as_sampled, as_written)  # measured: 0.82 -> 0.95
    assert by_ear(model, revise=False)(rec, wrong) == wrong
    assert by_ear(SimpleNamespace(features=None))(rec, wrong) == wrong


def test_note_encoder_mistakes_are_one_line_errors(cli, tmp_path):
    wav = tmp_path / "a.wav"
    write_audio(wav, np.zeros(16000, np.float32), 16000)
    p = cli("embed", wav, "-o", tmp_path / "e", "--encoder", f"notes:{tmp_path / 'nowhere'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "note encoder" in p.stderr
    p = cli("pretrain", "--data", tmp_path / "none.jsonl", "-o", tmp_path / "enc")
    assert p.returncode == 2 and "no such file" in p.stderr and "Traceback" not in p.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "audio": str(tmp_path / "x.wav")}])
    p = cli("pretrain", "--data", bad, "-o", tmp_path / "enc", "--steps", "1")
    assert p.returncode == 2 and "no usable training records" in p.stderr and "Traceback" not in p.stderr


def test_encoder_tells_the_instrument_family_from_the_whole_clip(trained):
    """The family outputs come from statistics of the whole clip (partials, how the level moves):
    one answer in every frame, the instrument's family on melodies the encoder never heard."""
    from abcscribe.core import gm
    from abcscribe.core.models.records import load_clip
    from abcscribe.core.note_encoder import N_BINS, N_FAMILIES, NoteEncoder

    _, _, val, enc, summary = trained
    assert summary["val_family_accuracy"] >= 0.9, summary
    ear = NoteEncoder(enc)
    records = [json.loads(line) for line in val.read_text().splitlines()]
    right = 0
    for rec in records:
        fams = ear.encode(load_clip(rec, 16000))[:, 2 * N_BINS:2 * N_BINS + N_FAMILIES]
        assert np.allclose(fams, fams[0])
        right += int(fams[0].argmax()) == gm.family(read_abc(rec["abc"])[0].voices[0].program)
    assert right >= len(records) - 1, (right, len(records))


def test_encoder_tells_the_family_of_each_note_it_hears(trained):
    """The per-note family map (fitted after the network, outside the layer a model reads):
    each heard note of a melody the encoder never heard gets the family its instrument is in,
    which is what lets transcribe give each voice of an ensemble its instrument."""
    from abcscribe.core import gm
    from abcscribe.core.listen import hearing, with_families
    from abcscribe.core.models.records import load_clip
    from abcscribe.core.note_encoder import N_BINS, NoteEncoder

    _, _, val, enc, summary = trained
    assert summary["val_note_family_accuracy"] >= 0.6, summary
    ear = NoteEncoder(enc)
    assert ear.model.config.note_families and ear.dim == 3 * N_BINS + 17 + ear.model.config.timbre
    right = total = 0
    for rec in (json.loads(line) for line in val.read_text().splitlines()):
        feats = ear.encode(load_clip(rec, 16000))
        heard = with_families(hearing(feats[:, :N_BINS], feats[:, N_BINS:2 * N_BINS]), ear.model,
                              feats[:, -N_BINS:])
        family = gm.family(read_abc(rec["abc"])[0].voices[0].program)
        right += sum(h.family == family for h in heard)
        total += len(heard)
    assert total and right >= 0.6 * total, (right, total)
