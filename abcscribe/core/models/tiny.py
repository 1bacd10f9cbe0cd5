"""The ``tiny`` preset, the embedded default: a composed model built from scratch, small enough
to learn on two CPU cores in minutes. A Qwen2 decoder of about 1.7 M parameters, a tokenizer
built from the training records' text (header lines and questions as single tokens, the tune
body character by character), a 2-layer MLP over four stacked CQT frames."""

from __future__ import annotations

import math
import string
from typing import Any

from abcscribe.core.errors import UserError
from abcscribe.core.models.chat import AUDIO_MARK, SIMPLE_CHAT_TEMPLATE, flatten
from abcscribe.core.models.records import answer_of, prompt_messages

SPECIAL = ["<pad>", "<eos>", "<unk>", AUDIO_MARK, "<|system|>", "<|user|>", "<|assistant|>"]

TINY_DEFAULTS: dict[str, Any] = dict(
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=512,
    vocab_size=512,  # upper bound; the trained tokenizer may be smaller
    tokenizer="lines",  # or "bpe" (see train_tokenizer)
    max_position_embeddings=4096,
    encoder="cqt",
    # four 20-ms CQT frames per audio token (80 ms, under a 16th note at 160 BPM): measured on
    # 2-bar folk-tune clips, it learns faster than two frames per token (shorter sequences)
    stack=4,
    projector="mlp",
    seed=0,
)


def train_tokenizer(texts: list[str], vocab_size: int = 512, kind: str = "lines"):
    """A tokenizer for the records' text, wrapped as a transformers fast tokenizer with a chat
    template. Every character of ``texts`` (and printable ASCII, so any ABC can be written) is a
    token. ``kind='lines'``: besides, each line or whole text that recurs (header fields such as
    ``M:6/8``, ``Q:1/4=120``, instrument lines, the questions) is one token, so the tune body stays
    character by character: one token per pitch letter, accidental, octave mark and length digit,
    which a small model learns to read off the audio much faster than BPE pieces mixing pitch and
    length. ``kind='bpe'``: byte-pair merges learnt from ``texts`` up to ``vocab_size``."""
    from collections import Counter

    from tokenizers import AddedToken, Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(set(string.printable) | {c for t in texts for c in t})
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size if kind == "bpe" else 0,
        special_tokens=SPECIAL,
        initial_alphabet=alphabet,
        show_progress=False,
        max_token_length=12,
    )
    tok.train_from_iterator(texts if kind == "bpe" else [], trainer=trainer)
    if kind == "lines":
        counts: Counter = Counter()
        for t in texts:
            lines = t.splitlines(keepends=True)
            counts.update(ln for ln in lines[:-1] if len(ln) > 2)  # a last line may be cut short
            if len(lines) == 1 and len(t) > 2:
                counts[t] += 1
        least = max(2, len(texts) // 1000)
        room = max(0, vocab_size - tok.get_vocab_size())
        common = [w for w, n in counts.most_common() if n >= least][:room]
        tok.add_tokens([AddedToken(w, normalized=False, special=False) for w in sorted(common)])
    elif kind != "bpe":
        raise UserError(f"unknown tokenizer kind {kind!r} (lines, bpe)")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL[3:],
    )
    fast.chat_template = SIMPLE_CHAT_TEMPLATE
    return fast


def build_tiny(train_records: list[dict[str, Any]], **overrides):
    """The untrained ``tiny`` model for these training records (their text trains the
    tokenizer). ``overrides`` change any of ``TINY_DEFAULTS``."""
    import torch
    from transformers import Qwen2Config

    from abcscribe.core.models.composed import build_composed

    unknown = set(overrides) - set(TINY_DEFAULTS) - {"device"}
    if unknown:
        raise UserError(f"unknown tiny setting(s): {', '.join(sorted(unknown))}")
    cfg = {**TINY_DEFAULTS, **overrides}
    texts = []
    for rec in train_records:
        texts.append(answer_of(rec))
        texts.extend(m["content"] for m in flatten(prompt_messages(rec)))
    texts = [t.replace(AUDIO_MARK, "") for t in texts if t]
    if not texts:
        raise UserError("the tiny model needs training records with text to build its tokenizer")
    tok = train_tokenizer(texts, vocab_size=int(cfg["vocab_size"]), kind=cfg["tokenizer"])
    torch.manual_seed(int(cfg["seed"]))
    text_config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=int(cfg["hidden_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=int(cfg["num_attention_heads"]),
        num_key_value_heads=int(cfg["num_key_value_heads"]),
        intermediate_size=int(cfg["intermediate_size"]),
        max_position_embeddings=int(cfg["max_position_embeddings"]),
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    lm = build_composed(
        text_config,
        tok,
        encoder=cfg["encoder"],
        projector=cfg["projector"],
        stack=int(cfg["stack"]),
        device=overrides.get("device", "cpu"),
    )
    # the longest clip the model takes is the longest it saw in training: transcribe cuts
    # recordings into windows of at most this length
    durs = [float(r["duration"]) for r in train_records if r.get("duration")]
    if durs:
        lm.core.config.window_seconds = lm.window_seconds = lm.features.window_seconds = (
            math.ceil(max(durs) * 10) / 10
        )
        lm.meta["train_clip_seconds"] = {"mean": round(sum(durs) / len(durs), 3), "max": max(durs)}
    lm.meta.update(preset="tiny", lm=None)
    return lm
