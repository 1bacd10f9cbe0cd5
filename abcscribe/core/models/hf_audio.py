"""Audio LLMs from transformers (Qwen2-Audio first): AutoProcessor + AutoModelForMultimodalLM.
The processor's chat template renders the record's messages and expands the audio; audio is
loaded and sliced at the processor's sampling rate; labels cover the assistant answer only."""

from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from abcscribe.core.errors import UserError
from abcscribe.core.models.base import AudioLM, GenerationOptions
from abcscribe.core.models.chat import answer_suffix_text, end_of_turn_id
from abcscribe.core.models.common import (
    ReferenceMixin,
    generation_kwargs,
    repeat_greedy,
    pad_rows,
    positions_from_mask,
    write_meta,
)
from abcscribe.core.models.composed import _pad_after_eos
from abcscribe.core.models.records import answer_of, load_clip, prompt_messages

# submodules that belong to the audio side (encoder, projector) rather than the language model
AUDIO_PARTS = ("audio_tower", "audio_encoder", "audio_model", "multi_modal_projector", "audio_projector")
LM_LINEAR = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj",
    "gate_up_proj", "c_attn", "c_proj", "c_fc", "fc1", "fc2", "out_proj", "dense",
}  # fmt: skip


class HFAudioLM(ReferenceMixin, AudioLM):
    """A transformers audio LLM and its processor."""

    family = "hf-audio"

    def __init__(self, model, processor, device="cpu", meta: dict[str, Any] | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        fe = processor.feature_extractor
        self.sample_rate = int(fe.sampling_rate)
        n = getattr(fe, "n_samples", None)
        self.window_seconds = float(n / self.sample_rate if n else getattr(fe, "chunk_length", 30))
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.eos_ids = self._stop_ids()
        fwd = inspect.signature(self.base.forward).parameters
        self._takes_positions = "position_ids" in fwd

    @property
    def base(self):
        m = self._policy()
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def _render(self, msgs, gen_prompt: bool) -> str:
        return self.processor.apply_chat_template(msgs, add_generation_prompt=gen_prompt, tokenize=False)

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.base, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids |= set(eos if isinstance(eos, list) else [eos])
        probe = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
        try:
            ids.add(end_of_turn_id(self._render, probe, self.tokenizer))
        except Exception:  # a template that needs audio in every turn
            pass
        return sorted(i for i in ids if i is not None)

    # ---- data ---------------------------------------------------------------------------
    def _one(self, rec: dict[str, Any], answers: bool):
        msgs = prompt_messages(rec)
        answer = answer_of(rec) if answers else None
        key = json.dumps([rec.get("audio"), rec.get("offset"), rec.get("duration"), msgs, answer], sort_keys=True)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        audio = load_clip(rec, self.sample_rate, max_seconds=self.window_seconds)
        text = self._render(msgs, True)
        enc = self.processor(text=[text], audio=[audio], sampling_rate=self.sample_rate, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        extras = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and torch.is_tensor(v)}
        ans = []
        if answers:
            suffix = answer_suffix_text(self._render, msgs, answer, self.tokenizer.eos_token)
            ans = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        out = (ids, ans, extras)
        self._cache[key] = out
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return out

    def collate(self, records: list[dict[str, Any]], answers: bool = True) -> dict[str, Any]:
        rows, labels, extras = [], [], []
        for rec in records:
            ids, ans, ex = self._one(rec, answers)
            rows.append(ids + ans)
            labels.append([-100] * len(ids) + ans)
            extras.append(ex)
        ids = pad_rows(rows, -2, left=not answers)
        mask = (ids != -2).long()
        out: dict[str, Any] = {"input_ids": ids.masked_fill(ids < 0, self.tokenizer.pad_token_id), "attention_mask": mask}
        for k in extras[0]:
            out[k] = torch.cat([e[k] for e in extras], dim=0)
        if answers:
            out["labels"] = pad_rows(labels, -100, left=False)
        return out

    def _to(self, batch):
        dt = next(self.base.parameters()).dtype
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(dt)
            out[k] = v
        return out

    # ---- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, prompt: dict[str, Any], opts: GenerationOptions) -> torch.Tensor:
        p = self._to(prompt)
        p.pop("labels", None)
        base = self.base
        was = base.training
        base.eval()
        try:
            if opts.seed is not None:
                torch.manual_seed(opts.seed)
            out = self._policy().generate(
                **p, **generation_kwargs(opts, self.tokenizer.pad_token_id, self.eos_ids)
            )
        finally:
            base.train(was)
        out = out[:, p["input_ids"].shape[1] :]
        return repeat_greedy(_pad_after_eos(out, self.eos_ids, self.tokenizer.pad_token_id), opts)

    def decode(self, ids) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---- scoring ------------------------------------------------------------------------
    def completion_logits(self, prompt, completion_ids, return_hidden: bool = False):
        p = self._to(prompt)
        p.pop("labels", None)
        comp = completion_ids.to(self.device)
        b = p["input_ids"].shape[0]
        r = comp.shape[0] // b
        rep = {k: v.repeat_interleave(r, dim=0) for k, v in p.items() if torch.is_tensor(v)}
        plen, t = rep["input_ids"].shape[1], comp.shape[1]
        rep["input_ids"] = torch.cat([rep["input_ids"], comp], dim=1)
        rep["attention_mask"] = torch.cat([rep["attention_mask"], torch.ones_like(comp)], dim=1)
        if self._takes_positions:
            rep["position_ids"] = positions_from_mask(rep["attention_mask"])
        out = self._policy()(**rep, output_hidden_states=return_hidden, use_cache=False)
        logits = out.logits[:, plen - 1 : plen - 1 + t]
        hidden = out.hidden_states[-1][:, plen - 1 : plen - 1 + t] if return_hidden else None
        return logits, hidden

    # ---- training / persistence ---------------------------------------------------------
    def train_mode(
        self, lora: bool, r: int = 16, alpha: int = 32, dropout: float = 0.05, train_encoder: bool = False
    ) -> None:
        """LoRA on the language model (the audio projector trained in full; the audio encoder
        frozen unless ``train_encoder``), or full fine-tuning of all but a frozen encoder."""
        model = self.model
        if lora and not self.is_lora():
            from peft import LoraConfig, get_peft_model

            targets, save = [], []
            for name, mod in model.named_modules():
                audio_side = any(part in name.split(".") for part in AUDIO_PARTS)
                if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LM_LINEAR:
                    if not audio_side or (train_encoder and "projector" not in name):
                        targets.append(name)
                last = name.rsplit(".", 1)[-1]
                if last in ("multi_modal_projector", "audio_projector"):
                    save.append(last)
            if not targets:
                raise UserError("found no linear layers in the language model to adapt with LoRA")
            cfg = LoraConfig(
                r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                modules_to_save=sorted(set(save)) or None, bias="none",
            )  # fmt: skip
            self.model = get_peft_model(model, cfg)
        elif not lora:
            for name, p in model.named_parameters():
                audio_enc = any(part in name.split(".") for part in AUDIO_PARTS if "projector" not in part)
                p.requires_grad_(train_encoder or not audio_enc)
        self.model.train()

    def save(self, out_dir, extra: dict[str, Any] | None = None) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.meta.items() if k not in ("family", "lora")}
        meta.update(family=self.family, lora=self.is_lora())
        self.model.save_pretrained(out)
        self.processor.save_pretrained(out)
        meta.update(extra or {})
        write_meta(out, meta)
        from abcscribe.core.files import atomic_write
        from abcscribe.core.models.card import model_card

        base = self.model.get_base_model() if self.is_lora() else self.model
        atomic_write(out / "README.md", model_card(meta, {
            "audio language model": self.meta.get("base") or self.meta.get("model")
            or getattr(base.config, "_name_or_path", None) or base.config.model_type,
            "parameters": f"{sum(p.numel() for p in base.parameters()):,}",
            "LoRA": "yes (adapter here)" if self.is_lora() else "no",
        }))


def _auto_class(spec: str):
    """AutoModelForMultimodalLM, or the auto class that knows this audio LLM (Audio Flamingo 3
    is registered as a sequence-to-sequence causal LM)."""
    from transformers import AutoConfig, AutoModelForMultimodalLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES

    model_type = AutoConfig.from_pretrained(spec).model_type
    if model_type in MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES:
        return AutoModelForMultimodalLM
    return AutoModelForSeq2SeqLM


def load_hf_audio(spec: str, meta: dict | None, *, device="cpu", dtype=None, train=False) -> HFAudioLM:
    from transformers import AutoProcessor

    meta = dict(meta or {})
    try:
        if meta.get("lora"):
            from peft import PeftModel

            base_spec = meta.get("base")
            if not base_spec:
                raise UserError(f"{spec}: abcscribe.json names no base model for its adapter")
            processor = AutoProcessor.from_pretrained(spec)
            base = _auto_class(base_spec).from_pretrained(base_spec, dtype=dtype or "auto")
            model = PeftModel.from_pretrained(base, spec, is_trainable=train)
        else:
            processor = AutoProcessor.from_pretrained(spec)
            model = _auto_class(spec).from_pretrained(spec, dtype=dtype or "auto")
            meta.setdefault("base", str(Path(spec).resolve()) if Path(spec).is_dir() else spec)
    except OSError as e:
        raise UserError(f"{spec}: cannot load the model ({e})") from None
    model.to(device)
    model.train(train)
    if not train:
        for p in model.parameters():
            p.requires_grad_(False)
    return HFAudioLM(model, processor, device=device, meta=meta)


def build_random_qwen2_audio(out_dir, texts: list[str], size: str = "tiny", seed: int = 0) -> Path:
    """Write a Qwen2-Audio directory with random weights (``size``: ``tiny`` for tests, ``7b``
    for the real configuration) and a BPE tokenizer trained on ``texts``; loads with
    ``load_model``. ``tiny`` takes 2-second clips (Whisper features of 2 s, not 30)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400 if size == "tiny" else 4000,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) + ["system user assistant You are a helpful assistant. Audio 1:"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
    )  # fmt: skip
    if size == "tiny":
        fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=2)
        audio = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                     num_mel_bins=128, max_source_positions=100)  # fmt: skip
        text = dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                    initializer_range=0.2)  # fmt: skip
    elif size == "7b":
        fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30)
        audio = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     num_mel_bins=128, max_source_positions=1500)  # fmt: skip
        text = dict(model_type="qwen2", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=8192)  # fmt: skip
    else:
        raise UserError(f"unknown size {size!r} (tiny, 7b)")
    text.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cfg = Qwen2AudioConfig(
        audio_config=audio, text_config=text, audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
