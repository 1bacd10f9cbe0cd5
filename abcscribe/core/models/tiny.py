"""The ``tiny`` preset, the embedded default: a composed model built from scratch, small enough
to learn on two CPU cores in minutes. A Qwen2 decoder of about 1.8 M parameters, a BPE
tokenizer trained on the training records' text, a 2-layer MLP over two stacked CQT frames."""

from __future__ import annotations

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
    max_position_embeddings=4096,
    encoder="cqt",
    stack=2,
    projector="mlp",
    seed=0,
)


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-free BPE tokenizer over the characters of ``texts`` (plus printable ASCII, so any
    ABC can be written), wrapped as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    alphabet = sorted(set(string.printable) | {c for t in texts for c in t})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=alphabet,
        show_progress=False,
        max_token_length=12,
    )
    tok.train_from_iterator(texts, trainer=trainer)
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
    tok = train_tokenizer(texts, vocab_size=int(cfg["vocab_size"]))
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
    lm.meta.update(preset="tiny", lm=None)
    return lm
