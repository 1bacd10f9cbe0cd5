"""Pieces every model family shares: padding, generation settings, LoRA, the reference policy,
``abcscribe.json``."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from abcscribe.core.models.base import AudioLM, GenerationOptions

META_FILE = "abcscribe.json"


def pad_rows(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    n = max(len(r) for r in rows)
    out = torch.full((len(rows), n), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            if left:
                out[i, n - len(r) :] = torch.tensor(r, dtype=torch.long)
            else:
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding safe)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


def generation_kwargs(opts: GenerationOptions, pad_id: int, eos_ids: list[int]) -> dict[str, Any]:
    if not (0.0 < opts.top_p <= 1.0):
        from abcscribe.core.errors import UserError

        raise UserError(f"top_p must be in (0, 1], got {opts.top_p}")
    sampling = bool(opts.temperature and opts.temperature > 0)
    kw: dict[str, Any] = dict(
        max_new_tokens=int(opts.max_new_tokens),
        # greedy decoding gives one answer per prompt; callers repeat it (see repeat_greedy)
        num_return_sequences=int(opts.num_samples) if sampling else 1,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        use_cache=True,
    )
    if sampling:
        kw.update(do_sample=True, temperature=float(opts.temperature), top_p=float(opts.top_p), top_k=0)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def repeat_greedy(ids: torch.Tensor, opts: GenerationOptions) -> torch.Tensor:
    """Greedy output has one row per prompt: repeat it ``num_samples`` times (prompt-major)."""
    if not (opts.temperature and opts.temperature > 0) and opts.num_samples > 1:
        return ids.repeat_interleave(int(opts.num_samples), dim=0)
    return ids


def lora_targets(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Names (last path component) of the linear layers of the language model that LoRA adapts:
    attention and MLP projections, never the output head, embeddings, or ``skip`` subtrees."""
    wanted = {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h",
        "fc1", "fc2", "out_proj", "qkv_proj", "gate_up_proj", "wq", "wk", "wv", "wo", "w1", "w2", "w3",
    }  # fmt: skip
    found = set()
    for name, mod in model.named_modules():
        if any(name.startswith(s) or f".{s}" in name for s in skip):
            continue
        if isinstance(mod, torch.nn.Linear):
            last = name.rsplit(".", 1)[-1]
            if last in wanted:
                found.add(last)
    return sorted(found)


class ReferenceMixin:
    """``reference()`` for every family: the LoRA adapter disabled, or a frozen copy."""

    _ref_model: Any = None
    _active: Any = None  # the module forward passes use (None: self.model)

    def _policy(self):
        return self._active if self._active is not None else self.model

    def is_lora(self) -> bool:
        try:
            from peft import PeftModel
        except ImportError:  # pragma: no cover
            return False
        return isinstance(self.model, PeftModel)

    def freeze_reference(self) -> None:
        """Snapshot the current weights as the reference policy (full fine-tuning only; with
        LoRA the reference is the base model with the adapter disabled)."""
        if not self.is_lora() and self._ref_model is None:
            ref = copy.deepcopy(self.model)
            ref.eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            self._ref_model = ref

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Forward passes inside use the reference policy: the LoRA adapter disabled, or a
        frozen copy of the weights taken by ``freeze_reference()`` (or on the first call)."""
        if self.is_lora():
            with self.model.disable_adapter():
                yield
            return
        self.freeze_reference()
        prev, self._active = self._active, self._ref_model
        try:
            yield
        finally:
            self._active = prev


def write_meta(out_dir: str | Path, meta: dict[str, Any]) -> None:
    from abcscribe.core.files import atomic_write

    atomic_write(Path(out_dir) / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / META_FILE
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def one_thread_for_small_cpu_model(lm: AudioLM, max_params: int = 20_000_000) -> None:
    """Use one torch thread for a CPU model under ``max_params`` parameters. Its work is a
    stream of tiny matrix products: a second thread adds only synchronisation, and on a busy
    2-core machine its spin-waiting made generation of the tiny preset 30-50 times slower and an
    sft step 20 times slower (measured). Large models, GPU models and an explicit
    OMP_NUM_THREADS keep their thread count."""
    import os

    module = getattr(lm, "model", None)
    if module is None or "OMP_NUM_THREADS" in os.environ:
        return
    if str(getattr(lm, "device", "cpu")).split(":")[0] != "cpu":
        return
    if sum(p.numel() for p in module.parameters()) < max_params:
        torch.set_num_threads(1)


def torch_dtype(name: str | None):
    if name in (None, "", "auto"):
        return None if name is None else "auto"
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if name not in table:
        from abcscribe.core.errors import UserError

        raise UserError(f"unknown dtype {name!r} (float32, bfloat16, float16)")
    return table[name]


AudioLMBase = AudioLM
