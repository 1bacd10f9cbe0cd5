"""`abcscribe ppo` as a user runs it: an sft model in, a better model out.

The toy task: one bar of two half notes (seven pitch letters), tempo 70-160 BPM, piano or
violin, rendered with the built-in synthesiser; CQT embeddings as `embed` writes them. A tiny
model after a short sft gets tempo and instrument right and the pitches partly (it is halfway
through learning to read them off the audio); ppo on clips the sft never saw must raise the mean
reward of greedy transcriptions of other held-out clips, and the same run with the update
switched off (--lr 0) must not."""

import json
import math
import random

import pytest
import torch

from abcscribe.core.models import load_model
from abcscribe.core.models.base import GenerationOptions
from abcscribe.core.train import ppo
from abcscribe.core.train.sft import SFTOptions, run_sft
from conftest import write_jsonl

LETTERS = "CDEFGAB"
PITCH = dict(C=60, D=62, E=64, F=65, G=67, A=69, B=71)
PROGRAMS = {0: "Acoustic Grand Piano", 40: "Violin"}
# small enough for a test: 2 layers of 64 (about 0.1 M parameters)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128)
PPO_STEPS = 30
SFT_STEPS = 550  # tempo and instrument right, pitch partly: held-out reward 0.574 (measured with
# the libraries of 2026-11-30; 700 steps, the old setting, now reach 0.9996, also with the code of
# the stop that chose 700, so the libraries, not our code, made the toy easier)


def toy_abc(notes, bpm, program):
    return (f"X:1\nM:4/4\nL:1/4\nQ:1/4={bpm}\nK:C\nV:1 name=\"{PROGRAMS[program]}\"\n"
            f"%%MIDI program {program}\n" + " ".join(f"{n}2" for n in notes) + " |\n")


def toy_records(folder, n, seed, split):
    """``n`` transcription records as mkqa + embed write them (audio and CQT embeddings)."""
    from abcscribe.core.audio import render, write_audio
    from abcscribe.core.encoders import get_encoder, save_embeddings
    from abcscribe.core.notes import TPQ, Note, Piece, Tempo, Voice

    enc = get_encoder("cqt")
    rng = random.Random(seed)
    records = []
    for i in range(n):
        notes = [rng.choice(LETTERS) for _ in range(2)]
        bpm, program = rng.randrange(70, 161, 5), rng.choice(sorted(PROGRAMS))
        piece = Piece(voices=[Voice([Note(PITCH[c], 2 * j * TPQ, 2 * TPQ) for j, c in enumerate(notes)],
                                    program=program)], tempos=[Tempo(0, float(bpm))])
        audio = render(piece, sr=enc.sample_rate, engine="builtin")
        rid = f"{split}-{i:03d}"
        wav, emb = folder / f"{rid}.wav", folder / f"{rid}.safetensors"
        write_audio(wav, audio, enc.sample_rate)
        save_embeddings(emb, enc.encode(audio), {"encoder": "cqt", "frame_rate": enc.frame_rate,
                                                 "duration": len(audio) / enc.sample_rate})
        abc = toy_abc(notes, bpm, program)
        records.append({
            "id": rid, "piece": rid, "split": split, "audio": str(wav), "embedding": str(emb),
            "offset": 0.0, "duration": len(audio) / enc.sample_rate, "task": "transcribe",
            "messages": [
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Transcribe this audio to ABC."}]},
                {"role": "assistant", "content": abc},
            ],
            "abc": abc, "meta": {"tempo": bpm, "metre": "4/4", "instruments": [PROGRAMS[program]]},
        })  # fmt: skip
    return records


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Train/rl/held-out JSONL of the toy task and a tiny model after a short sft."""
    folder = tmp_path_factory.mktemp("ppo-toy")
    train = write_jsonl(folder / "train.jsonl", toy_records(folder, 1024, 1, "train"))
    held_out = write_jsonl(folder / "val.jsonl", toy_records(folder, 128, 2, "val"))
    sft = folder / "sft"
    run_sft(train, sft, SFTOptions(max_steps=SFT_STEPS, batch_size=8, lr=3e-3, warmup_ratio=0.0,
                                   logging_steps=100, tiny=TINY), warn=lambda m: None)
    return folder, train, held_out, sft


@pytest.fixture(scope="module")
def rl_prompts(toy):
    """Clips for ppo that neither sft nor the evaluation sees."""
    return write_jsonl(toy[0] / "rl.jsonl", toy_records(toy[0], 256, 3, "rl"))


def ppo_args(toy, data, out, *extra):
    folder, train, held_out, sft = toy
    return ("ppo", "--data", data, "--model", sft, "-o", out, "--eval-data", held_out,
            "--max-steps", str(PPO_STEPS), "--max-new-tokens", "64", "--seed", "0", *extra)


@pytest.mark.slow
def test_ppo_raises_held_out_reward_and_a_run_without_updates_does_not(cli, toy, rl_prompts,
                                                                       tmp_path):
    out = tmp_path / "ppo"
    p = cli(*ppo_args(toy, rl_prompts, out))  # the default batch: 32 prompts x 8 samples
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    before, after = result["eval_before"], result["eval_after"]
    print(f"ppo toy task: held-out greedy reward {before:.4f} -> {after:.4f}")
    assert 0.3 < before < 0.95  # partly right: room to improve, something to build on
    assert after >= before + 0.03, (before, after)  # measured 0.574 -> 0.642 (seed 0)

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "kl" in r]
    assert [r["step"] for r in steps] == list(range(1, PPO_STEPS + 1))
    for key in ("reward_mean", "reward_std", "reward_pitch", "reward_tempo", "reward_instrument",
                "reward_metre", "kl", "clip_frac", "entropy", "response_length", "samples_per_s"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in steps), key
    assert max(r["kl"] for r in steps) > 0  # the policy moved away from the reference
    evals = {r["eval"]: r["reward_mean"] for r in log if "eval" in r}
    assert evals == {"before": before, "after": after}

    # the output loads like an sft output and transcribes
    lm = load_model(str(out))
    rec = json.loads(toy[2].read_text().splitlines()[0])
    text = lm.generate([rec], GenerationOptions(temperature=0, max_new_tokens=64))[0][0]
    assert "Q:1/4=" in text and "|" in text

    # control: the same run with the update switched off learns nothing
    control = cli(*ppo_args(toy, rl_prompts, tmp_path / "control", "--lr", "0"))
    assert control.returncode == 0, control.stderr
    c = json.loads(control.stdout)
    assert c["eval_before"] == before
    assert abs(c["eval_after"] - c["eval_before"]) < 1e-9


@pytest.mark.slow
def test_lora_reference_is_the_same_weights_with_the_adapter_off(toy, tmp_path):
    folder, train, held_out, _ = toy
    sft = tmp_path / "sft-lora"
    run_sft(train, sft, SFTOptions(max_steps=3, batch_size=4, lora=True, lora_r=4, tiny=TINY,
                                   logging_steps=1), warn=lambda m: None)
    lm = load_model(str(sft), train=True)
    records = [json.loads(line) for line in held_out.read_text().splitlines()[:2]]
    n_params = sum(p.numel() for p in lm.model.parameters())
    stored = {p.data_ptr() for p in lm.model.parameters()}
    used = {"policy": set(), "reference": set()}
    mode = ["policy"]

    def record_weight(module, args, output):
        used[mode[0]].add(module.weight.data_ptr())

    hooks = [m.register_forward_hook(record_weight) for m in lm.model.modules()
             if isinstance(m, torch.nn.Linear)]
    # one ppo step: the adapter moves, the reference must not
    ppo.train(lm, records, tmp_path / "ppo", ppo.PPOConfig(
        batch_size=2, samples_per_prompt=2, max_new_tokens=16, max_steps=1, lr=1e-2), warn=lambda m: None)
    prompt = lm.collate(records, answers=False)
    ids = lm.generate_ids(prompt, GenerationOptions(temperature=1.0, max_new_tokens=8, seed=0))
    with torch.no_grad():
        policy_logits, _ = lm.completion_logits(prompt, ids)
        mode[0] = "reference"
        with lm.reference():
            ref_logits, _ = lm.completion_logits(prompt, ids)
    for h in hooks:
        h.remove()
    # the reference ran on weights the policy model holds: no second copy anywhere
    assert used["reference"] and used["reference"] <= stored
    assert sum(p.numel() for p in lm.model.parameters()) == n_params
    # and it is a different policy: the adapter (trained by the ppo step) is off
    assert not torch.allclose(policy_logits, ref_logits)


def test_a_failing_or_nan_reward_gets_the_minimum_and_training_goes_on(toy, tmp_path):
    folder, train, held_out, sft = toy
    records = [json.loads(line) for line in train.read_text().splitlines()[:4]]
    bad = {records[0]["abc"]: "raise", records[1]["abc"]: "nan"}

    def reward(ref, completion):
        if bad.get(ref) == "raise":
            raise ValueError("scorer broke")
        if bad.get(ref) == "nan":
            return float("nan"), {}
        return 0.5, {}

    warnings = []
    lm = load_model(str(sft), train=True)
    out = tmp_path / "ppo"
    summary = ppo.train(lm, records, out, ppo.PPOConfig(
        batch_size=4, samples_per_prompt=2, max_new_tokens=16, max_steps=2, seed=0),
        reward_fn=reward, warn=warnings.append)
    assert summary["steps"] == 2 and (out / "abcscribe.json").exists()
    assert any("scorer broke" in w and "minimum reward" in w for w in warnings)
    assert any("nan" in w and "minimum reward" in w for w in warnings)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for row in log:  # every step sees all four prompts: two score 0.5, two get the minimum
        assert row["reward_failures"] == 4
        assert row["reward_mean"] == pytest.approx((4 * 0.5 + 4 * ppo.MIN_REWARD) / 8)


def test_top_p_outside_0_1_is_a_one_line_error(cli, tmp_path):
    p = cli("ppo", "--data", tmp_path / "x.jsonl", "--model", tmp_path, "-o", tmp_path / "o",
            "--top-p", "1.2")
    assert p.returncode == 2
    assert "--top-p must be in (0, 1]" in p.stderr and "Traceback" not in p.stderr


def test_data_without_transcription_records_is_a_one_line_error(cli, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"id": "a", "task": "tempo", "abc": "X:1"}])
    p = cli("ppo", "--data", data, "--model", tmp_path, "-o", tmp_path / "o")
    assert p.returncode == 2
    assert "no 'transcribe' records" in p.stderr and "Traceback" not in p.stderr
