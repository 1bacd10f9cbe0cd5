"""The one interface that ``sft``, ``ppo`` and ``transcribe`` use for every model family.

A family (composed Llark-style model, transformers audio LLM such as Qwen2-Audio, the ``tiny``
preset) subclasses ``AudioLM``. Records are the Q&A records of ``mkqa``: ``messages`` (chat
format; the user turn holds ``{"type": "audio"}``), ``audio`` + ``offset`` + ``duration``, and
optionally ``embedding`` (a .safetensors from ``embed``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0  # in (0, 1]
    max_new_tokens: int = 2048
    num_samples: int = 1
    seed: int | None = None


class AudioLM:
    """An audio language model behind one interface.

    Attributes every family sets:
      family          name written to ``abcscribe.json`` ("composed", "hf-audio")
      model           the torch module that trains (a PeftModel when LoRA is on)
      tokenizer       has ``pad_token_id``, ``eos_token_id``, ``decode``
      sample_rate     audio rate the encoder / processor expects
      window_seconds  longest clip the model takes (30 for Whisper-based encoders)
      device          torch device of the model
    """

    family: str = "abstract"
    model: Any = None
    tokenizer: Any = None
    sample_rate: int = 16000
    window_seconds: float = 30.0
    device: Any = "cpu"

    # ---- data -------------------------------------------------------------------------
    def collate(self, records: list[dict[str, Any]], answers: bool = True) -> dict[str, Any]:
        """Model inputs for a batch of records (their audio or embeddings loaded and sliced).
        With ``answers``, the assistant answer (+ EOS) is appended and ``labels`` is -100
        everywhere except on those answer tokens. Without, inputs end where the answer would
        start (left-padded, ready for generation)."""
        raise NotImplementedError

    # ---- generation -------------------------------------------------------------------
    def generate_ids(self, prompt: dict[str, Any], opts: GenerationOptions) -> Any:
        """Sample ``opts.num_samples`` completions per prompt of ``collate(..., answers=False)``.
        Returns a LongTensor [batch * num_samples, T] (prompt-major order: the samples of
        prompt 0 first), padded with ``pad_token_id`` after EOS; EOS itself is kept."""
        raise NotImplementedError

    def decode(self, ids: Any) -> list[str]:
        """Text of completion ids (special tokens and padding removed)."""
        raise NotImplementedError

    def generate(self, records: list[dict[str, Any]], opts: GenerationOptions) -> list[list[str]]:
        """For each record, ``opts.num_samples`` completions as text."""
        prompt = self.collate(records, answers=False)
        texts = self.decode(self.generate_ids(prompt, opts))
        k = opts.num_samples
        return [texts[i * k : (i + 1) * k] for i in range(len(records))]

    # ---- scoring (for ppo) ------------------------------------------------------------
    def completion_logits(
        self, prompt: dict[str, Any], completion_ids: Any, return_hidden: bool = False
    ) -> tuple[Any, Any]:
        """Forward the prompts followed by ``completion_ids`` (prompt i's batch row repeated
        ``completion_ids.shape[0] // batch`` times, prompt-major). Returns ``(logits, hidden)``
        where ``logits[:, t]`` is the distribution for ``completion_ids[:, t]`` ([N, T, V]) and
        ``hidden`` the last hidden state at the same positions ([N, T, H]) or None."""
        raise NotImplementedError

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Inside this block, forward passes use the reference policy: the LoRA adapter
        disabled (no second copy of the weights), or a frozen copy for full fine-tuning."""
        raise NotImplementedError
        yield  # pragma: no cover

    # ---- persistence ------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write a directory that ``load_model`` reads back with nothing else: weights or
        adapter (safetensors), config, tokenizer/processor, and ``abcscribe.json`` naming the
        family (``extra`` is merged into it)."""
        raise NotImplementedError
