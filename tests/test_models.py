"""Model families behind one interface: the tiny composed model and a tiny Qwen2-Audio, built
from configs, trained on a handful of rendered tunes, saved and loaded back."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from abcscribe.core.errors import UserError
from abcscribe.core.models import GenerationOptions, build_tiny, load_model

TUNES = ["C E G c", "c G E C", "D F A d", "E G B e", "A c e a"]
QUESTION = "Transcribe this audio to ABC."
GREEDY = GenerationOptions(temperature=0, max_new_tokens=80)


def tune_abc(body: str) -> str:
    return f"X:1\nM:4/4\nL:1/4\nQ:1/4=120\nK:C\n{body}|\n"


def make_records(folder, tunes=TUNES, sr=16000):
    """Q&A records as mkqa writes them: one rendered bar per tune, the ABC as the answer."""
    from abcscribe.core.abc import read_abc
    from abcscribe.core.audio import render, write_audio

    records = []
    for i, body in enumerate(tunes):
        abc = tune_abc(body)
        piece, _ = read_abc(abc)
        path = folder / f"tune{i}.wav"
        write_audio(path, render(piece, sr=sr, engine="builtin"), sr)
        records.append({
            "id": f"tune{i}", "piece": f"tune{i}", "split": "train", "audio": str(path),
            "offset": 0.0, "duration": 2.0, "task": "transcribe", "abc": abc,
            "messages": [
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": QUESTION}]},
                {"role": "assistant", "content": abc},
            ],
        })  # fmt: skip
    return records


def train_steps(lm, records, steps, lr):
    """Plain full-batch training through the interface; returns the first and last loss."""
    torch.manual_seed(0)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    batch = lm.collate(records)
    lm.model.train()
    losses = []
    for _ in range(steps):
        loss = lm.model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    torch.set_num_threads(1)
    return make_records(tmp_path_factory.mktemp("tunes"))


def test_collated_labels_cover_only_the_answer(records):
    lm = build_tiny(records)
    batch = lm.collate(records[:2])
    for i, rec in enumerate(records[:2]):
        lab = batch["labels"][i]
        kept = lab[lab != -100]
        # the answer and the end-of-turn token, nothing of the prompt or the audio
        assert lm.tokenizer.decode(kept[:-1]) == rec["abc"]
        assert kept[-1].item() == lm.tokenizer.eos_token_id
        answer_start = (lab != -100).nonzero()[0].item()
        assert not batch["audio_positions"][i, answer_start:].any()
        assert batch["audio_positions"][i].sum() == batch["audio_mask"][i].sum()
    # 2 s of audio at 50 frames/s, ``stack`` frames per audio token
    per = -(-100 // lm.core.config.stack)
    assert batch["audio_mask"].sum(1).tolist() == [per, per]
    prompt = lm.collate(records[:2], answers=False)
    assert "labels" not in prompt
    assert (prompt["input_ids"].shape[1] < batch["input_ids"].shape[1])
    # prompts are left-padded for generation: every row ends with a real token
    assert prompt["attention_mask"][:, -1].tolist() == [1, 1]


def test_tiny_learns_the_tunes_and_reloads_in_a_fresh_process(records, tmp_path):
    lm = build_tiny(records)
    assert 1e6 < sum(p.numel() for p in lm.model.parameters()) < 3e6
    first, last = train_steps(lm, records, steps=90, lr=1e-3)
    assert last <= first / 2
    out = lm.generate(records, GREEDY)
    # the tunes share their header: telling them apart needs the audio
    assert sum(o[0] == r["abc"].strip() for o, r in zip(out, records)) >= 3

    lm.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "abcscribe.json").read_text())
    assert meta["family"] == "composed"
    assert greedy_in_a_fresh_process(tmp_path / "model", records) == out


def greedy_in_a_fresh_process(model_dir, records):
    """What a saved model writes for ``records`` (greedy) when another process loads it."""
    code = textwrap.dedent(f"""
        import json, sys
        from abcscribe.core.models import GenerationOptions, load_model
        lm = load_model({str(model_dir)!r})
        recs = json.loads(sys.stdin.read())
        print(json.dumps(lm.generate(recs, GenerationOptions(temperature=0, max_new_tokens=80))))
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(records),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_completion_logits_match_generation_and_reference(records):
    lm = build_tiny(records)
    train_steps(lm, records, steps=20, lr=3e-3)
    lm.freeze_reference()
    prompt = lm.collate(records[:2], answers=False)
    ids = lm.generate_ids(prompt, GenerationOptions(temperature=0, max_new_tokens=30, num_samples=2))
    assert ids.shape[0] == 4
    logits, hidden = lm.completion_logits(prompt, ids, return_hidden=True)
    assert logits.shape[:2] == ids.shape and hidden.shape[:2] == ids.shape
    # greedy tokens are the argmax of the scored distributions, up to the first EOS
    for row, lg in zip(ids, logits):
        eos = (row == lm.tokenizer.eos_token_id).nonzero()
        n = eos[0].item() + 1 if len(eos) else len(row)
        assert torch.equal(lg[:n].argmax(-1), row[:n])
    # the reference is frozen: training moves the policy away from it
    with lm.reference():
        ref_before = lm.completion_logits(prompt, ids)[0]
    train_steps(lm, records, steps=3, lr=3e-3)
    with torch.no_grad(), lm.reference():
        ref_after = lm.completion_logits(prompt, ids)[0]
        assert torch.allclose(ref_before, ref_after)
    assert not torch.allclose(lm.completion_logits(prompt, ids)[0], ref_after)


@pytest.mark.slow
def test_tiny_qwen2_audio_lora_learns_and_reloads(records, tmp_path):
    from abcscribe.core.models.hf_audio import build_random_qwen2_audio

    texts = [r["abc"] for r in records] + [QUESTION]
    base = build_random_qwen2_audio(tmp_path / "qwen2-audio", texts)
    lm = load_model(str(base), train=True)
    assert lm.family == "hf-audio" and lm.sample_rate == 16000
    lm.train_mode(lora=True, r=16, alpha=32, dropout=0.0)
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert not any("audio_tower" in n for n in trainable)

    batch = lm.collate(records[:1])
    lab = batch["labels"][0]
    kept = lm.tokenizer.decode(lab[lab != -100])
    assert kept == records[0]["abc"] + "<|im_end|>"

    train_recs = records[:3]
    first, last = train_steps(lm, train_recs, steps=30, lr=5e-3)
    assert last <= first / 2
    out = lm.generate(train_recs, GREEDY)
    assert sum(o[0] == r["abc"].strip() for o, r in zip(out, train_recs)) >= 2

    prompt = lm.collate(train_recs[:1], answers=False)
    ids = lm.generate_ids(prompt, GREEDY)
    with torch.no_grad():
        policy = lm.completion_logits(prompt, ids)[0]
        with lm.reference():  # the adapter switched off: the random base model again
            ref = lm.completion_logits(prompt, ids)[0]
    assert not torch.allclose(policy, ref)

    lm.save(tmp_path / "sft")
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()
    assert greedy_in_a_fresh_process(tmp_path / "sft", train_recs) == out


def test_load_model_says_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match="tiny"):
        load_model("tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model directory"):
        load_model(str(tmp_path / "empty"))


def build_tiny_audio_flamingo3(folder, texts):
    """A random Audio Flamingo 3 with tiny configs, a tokenizer trained on ``texts``, Whisper
    features of 2-second windows, and a chat template that puts ``<sound>`` where the audio is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        PreTrainedTokenizerFast,
        WhisperFeatureExtractor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([*texts, "system user assistant"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=special[0], pad_token=special[0],
                                  additional_special_tokens=special[1:])  # fmt: skip
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
        "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'audio' %}<sound>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    cfg = AudioFlamingo3Config(
        audio_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, num_mel_bins=128, max_source_positions=100),
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                         initializer_range=0.2),
        audio_token_id=tok.convert_tokens_to_ids("<sound>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = AudioFlamingo3ForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=2)
    AudioFlamingo3Processor(feature_extractor=fe, tokenizer=tok, chat_template=template, max_audio_len=2).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_audio_flamingo3_goes_through_the_same_path(records, tmp_path):
    base = build_tiny_audio_flamingo3(tmp_path / "af3", [r["abc"] for r in records] + [QUESTION])
    lm = load_model(str(base), train=True)
    assert lm.family == "hf-audio"
    lm.train_mode(lora=True, r=16, alpha=32, dropout=0.0)
    first, last = train_steps(lm, records[:3], steps=30, lr=5e-3)
    assert last <= first / 2
    out = lm.generate(records[:3], GREEDY)
    assert sum(o[0] == r["abc"].strip() for o, r in zip(out, records)) >= 2
    lm.save(tmp_path / "sft")
    assert load_model(str(tmp_path / "sft")).generate(records[:3], GREEDY) == out
