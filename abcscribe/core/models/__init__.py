"""Audio language models behind one interface (:class:`AudioLM`), for sft, ppo and transcribe.

Families:
  composed   audio embeddings -> projection -> any causal LM (Llark-style); ``tiny`` is one
  hf-audio   transformers audio LLMs (Qwen2-Audio, ...) through AutoProcessor +
             AutoModelForMultimodalLM

``load_model(spec)`` opens a directory written by ``AudioLM.save`` (``sft``/``ppo`` output), a
transformers audio-LLM directory or hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from abcscribe.core.errors import UserError
from abcscribe.core.models.base import AudioLM, GenerationOptions

__all__ = ["AudioLM", "GenerationOptions", "load_model", "build_tiny", "build_model", "model_kind"]


def build_tiny(train_records: list[dict[str, Any]], **overrides) -> AudioLM:
    """The untrained ``tiny`` preset for these training records."""
    from abcscribe.core.models.tiny import build_tiny as _build

    return _build(train_records, **overrides)


def model_kind(spec: str) -> str:
    """'tiny', 'composed', 'hf-audio' (an audio LLM), or 'causal-lm' (a text LM the composed
    model is built around) for a model spec."""
    if spec == "tiny":
        return "tiny"
    p = Path(spec)
    if p.is_dir():
        from abcscribe.core.modeldir import check_model_dir
        from abcscribe.core.models.common import read_meta

        check_model_dir(p)  # a corrupt file: one line naming it

        meta = read_meta(p)
        if meta is not None:
            return meta.get("family", "composed")
        if (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
            raise UserError(f"{spec}: a LoRA adapter without abcscribe.json; train it with 'sft'")
        if not (p / "config.json").is_file():
            raise UserError(f"{spec}: not a model directory (no config.json)")
        raw = json.loads((p / "config.json").read_text())
        model_type, has_audio = raw.get("model_type"), "audio_config" in raw
    elif p.exists():
        raise UserError(f"{spec}: not a model directory")
    else:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(spec)
            model_type, has_audio = cfg.model_type, hasattr(cfg, "audio_config")
        except Exception as e:  # offline, unknown id, ...
            raise UserError(f"{spec}: no such model directory, and not loadable as a hub id ({e.__class__.__name__})") from None
    if model_type == "abcscribe_composed":
        return "composed"
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES or has_audio:
        return "hf-audio"
    return "causal-lm"


def load_model(spec: str, *, device: str = "cpu", dtype: str | None = None, train: bool = False) -> AudioLM:
    """The model at ``spec``: an sft/ppo output directory, a transformers audio-LLM directory or
    hub id. ``device`` 'auto' picks cuda when there is one. ``train`` leaves it trainable (an
    adapter stays trainable)."""
    from abcscribe.core.models.common import read_meta, torch_dtype

    if device in (None, "", "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "tiny":
        raise UserError("'tiny' is built from training data: train it with 'abcscribe sft --model tiny'")
    kind = model_kind(spec)
    td = torch_dtype(dtype)
    meta = read_meta(spec) if Path(spec).is_dir() else None
    try:
        if kind == "composed":
            from abcscribe.core.models.composed import load_composed

            return load_composed(spec, meta or {"family": "composed"}, device=device, dtype=td, train=train)
        if kind == "hf-audio":
            from abcscribe.core.models.hf_audio import load_hf_audio

            return load_hf_audio(spec, meta, device=device, dtype=td, train=train)
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # what loaders raise on bad files
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{spec}: cannot load the model ({why})") from None
    raise UserError(
        f"{spec}: a text-only language model; build an audio model around it with "
        "'abcscribe sft --model SPEC' (the composed family)"
    )


def build_model(
    spec: str,
    train_records: list[dict[str, Any]] | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    encoder: str = "cqt",
    projector: str = "mlp",
    stack: int | None = None,
    tiny: dict[str, Any] | None = None,
) -> AudioLM:
    """A model to start training from: ``tiny`` (built for ``train_records``), a causal LM
    wrapped in a new composed model, or whatever ``load_model`` opens (trainable)."""
    from abcscribe.core.models.common import torch_dtype

    kind = model_kind(spec)
    if kind == "tiny":
        over = {"encoder": encoder, "projector": projector, **({"stack": stack} if stack else {})}
        return build_tiny(train_records or [], device=device, **{**over, **(tiny or {})})
    if kind == "causal-lm":
        from abcscribe.core.models.composed import build_composed

        return build_composed(
            spec, encoder=encoder, projector=projector, stack=stack or 2, device=device,
            dtype=torch_dtype(dtype),
        )
    return load_model(spec, device=device, dtype=dtype, train=True)
