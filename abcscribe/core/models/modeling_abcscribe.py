"""The composed audio LM as transformers classes: audio embeddings -> projection -> the input
embeddings of a causal language model.

This file imports only torch and transformers: ``save_pretrained`` copies it into every model
folder (``auto_map`` in config.json names its classes), so the folder loads with
``AutoModel.from_pretrained(dir, trust_remote_code=True)`` where abcscribe is not installed, and
with plain ``AutoModel.from_pretrained(dir)`` once ``register()`` has run (``import abcscribe``
does it). The audio features themselves (CQT frames, a note encoder) come from abcscribe's
feature extractors; text-only prompts need nothing else."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec

AUDIO_INPUTS = ("audio_features", "audio_mask", "audio_positions")


class ComposedConfig(PretrainedConfig):
    """Configuration of :class:`ComposedModel`: the LM's config (``text_config``), the audio
    feature size and encoder, and the projection."""

    model_type = "abcscribe_composed"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    text_config: dict | PretrainedConfig | None = None
    audio_dim: int = 72
    stack: int = 2
    projector: str = "mlp"  # "linear" | "mlp"
    encoder: str = "cqt"
    frame_rate: float = 50.0
    sample_rate: int = 16000
    window_seconds: float = 30.0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projector not in ("linear", "mlp"):
            raise ValueError(f"projector must be 'linear' or 'mlp', got {self.projector!r}")


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding safe)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class ComposedModel(PreTrainedModel, GenerationMixin):
    """Projection + causal LM. ``forward`` takes token ids with audio slots
    (``audio_positions``) and the audio features that fill them; ``generate`` fills the slots
    on the first step and then runs on the LM's KV cache."""

    config_class = ComposedConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    main_input_name = "input_ids"

    def __init__(self, config: ComposedConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        din = config.audio_dim * config.stack
        if config.projector == "linear":
            self.projector = nn.Linear(din, hidden)
        else:
            self.projector = nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.lm = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.lm.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and any(module is m for m in self.projector.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def embed(
        self,
        input_ids: torch.Tensor,
        audio_positions: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the projected audio frames written into the audio slots."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if audio_features is None or audio_positions is None or not bool(audio_positions.any()):
            return emb
        if audio_positions.shape[1] < input_ids.shape[1]:  # generated tokens after the prompt
            audio_positions = nn.functional.pad(audio_positions, (0, input_ids.shape[1] - audio_positions.shape[1]))
        b, f, d = audio_features.shape
        k = self.config.stack
        x = audio_features.reshape(b, f // k, d * k).to(emb.dtype)
        a = self.projector(x)[audio_mask.bool()]
        return emb.masked_scatter(audio_positions.bool().unsqueeze(-1), a.to(emb.dtype))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        audio_positions: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, audio_positions, audio_features, audio_mask)
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # the mask covers the whole sequence, cached part included: the last positions
            position_ids = _positions(attention_mask)[:, -inputs_embeds.shape[1]:]
        return self.lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids, *args, is_first_iteration=False, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        cached = inputs.get("cache", inputs.get("past_key_values"))
        if not is_first_iteration and cached is not None and cached.get_seq_length() > 0:
            for key in AUDIO_INPUTS:  # the audio is in the cache after the first step
                inputs.pop(key, None)
        return inputs


def register() -> None:
    """Make ``AutoConfig``/``AutoModel``/``AutoModelForCausalLM`` know ``abcscribe_composed``,
    and have ``save_pretrained`` copy this file into the folder with an ``auto_map``."""
    AutoConfig.register(ComposedConfig.model_type, ComposedConfig, exist_ok=True)
    AutoModel.register(ComposedConfig, ComposedModel, exist_ok=True)
    AutoModelForCausalLM.register(ComposedConfig, ComposedModel, exist_ok=True)
    ComposedConfig.register_for_auto_class()
    ComposedModel.register_for_auto_class("AutoModel")
