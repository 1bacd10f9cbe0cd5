"""Augmented training clips: a transposed clip's frames and answer move together (the loudest
CQT bin at each note is the transposed note), a stretched clip is shorter and faster."""

import json

import numpy as np
from conftest import write_jsonl

from abcscribe.core.abc import read_abc
from abcscribe.core.audio import render, write_audio
from abcscribe.core.augment import augment_record, transpose_abc
from abcscribe.core.models.records import load_embedding
from abcscribe.core.note_encoder import LOWEST_PITCH, clip_targets

TUNE = "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:D\nV:1\n%%MIDI program 73\nd2 f2 a2 f2 | e2 g2 b2 g2 |]\n"


def test_transposing_abc_moves_every_note_and_the_key():
    up = transpose_abc(TUNE, 3)  # D major up a minor third: F major
    piece, _ = read_abc(up)
    assert "K:F" in up
    assert [n.pitch for n in piece.voices[0].notes] == [n.pitch + 3 for n in read_abc(TUNE)[0].voices[0].notes]
    assert "K:D" in transpose_abc(up, -3)


def test_an_augmented_clip_sounds_its_new_answer(tmp_path, cli):
    wav = tmp_path / "t.wav"
    write_audio(wav, render(read_abc(TUNE)[0], sr=16000, engine="builtin"), 16000)
    rec = {"id": "t", "audio": str(wav), "offset": 0.0, "duration": 4.8, "abc": TUNE,
           "messages": [{"role": "assistant", "content": TUNE}]}  # fmt: skip
    p = cli("embed", write_jsonl(tmp_path / "r.jsonl", [rec]), "-o", tmp_path / "emb", "--encoder", "cqt")
    assert p.returncode == 0, p.stderr
    stored = json.loads(p.stdout)

    new = augment_record(stored, tmp_path / "aug.safetensors", semitones=-2, rate=1.25)
    assert new["messages"][-1]["content"] == new["abc"] and "Q:1/4=125" in new["abc"] and "K:C" in new["abc"]
    frames, meta = load_embedding(new)
    old, _ = load_embedding(stored)
    assert meta["encoder"] == "cqt" and abs(len(frames) - len(old) / 1.25) <= 1
    onsets, _, _ = clip_targets(new["abc"], len(frames))
    hits = [frames[t + 1 : t + 4].mean(0).argmax() == p for t, p in zip(*np.nonzero(onsets))]
    assert len(hits) == 8 and sum(hits) >= 7, (hits, LOWEST_PITCH)
