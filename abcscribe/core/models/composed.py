"""The composed (Llark-style) model: audio embeddings -> projection -> the input embeddings of a
causal language model. The audio positions sit in the prompt where the chat template puts the
audio; generation runs the LM's own ``generate`` on ``inputs_embeds`` with its KV cache."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from abcscribe.core.errors import UserError
from abcscribe.core.models.base import AudioLM, GenerationOptions
from abcscribe.core.models.chat import (
    AUDIO_MARK,
    SIMPLE_CHAT_TEMPLATE,
    PromptCache,
    answer_suffix_text,
    end_of_turn_id,
    flatten,
)
from abcscribe.core.models.common import (
    ReferenceMixin,
    generation_kwargs,
    repeat_greedy,
    lora_targets,
    pad_rows,
    positions_from_mask,
    write_meta,
)
from abcscribe.core.models.features import FeatureSource
from abcscribe.core.models.modeling_abcscribe import ComposedConfig, ComposedModel, register

register()
from abcscribe.core.models.records import answer_of, prompt_messages


class ComposedAudioLM(ReferenceMixin, AudioLM):
    """A :class:`ComposedModel` (maybe wrapped by peft) with its tokenizer and feature source."""

    family = "composed"

    def __init__(self, model, tokenizer, device="cpu", meta: dict[str, Any] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        cfg = self.core.config
        self.sample_rate = int(cfg.sample_rate)
        self.window_seconds = float(cfg.window_seconds)
        self.features = FeatureSource(cfg.encoder, cfg.audio_dim, cfg.frame_rate, cfg.window_seconds)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
        self._prompts = PromptCache(self._tokenize)
        self.eos_ids = self._stop_ids()
        # markers of the chat layout (audio slot, turn tags) are never part of an answer
        special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
        keep = set(self.eos_ids) | {tokenizer.pad_token_id, tokenizer.unk_token_id, None}
        self.suppress_ids = sorted(special - keep)

    # ---- helpers ------------------------------------------------------------------------
    @property
    def core(self) -> ComposedModel:
        """The ComposedModel under any peft wrapper."""
        m = self._policy()
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def _render(self, msgs, gen_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=gen_prompt, tokenize=False)

    def _stop_ids(self) -> list[int]:
        probe = [{"role": "user", "content": "q"}]
        ids = [self.tokenizer.eos_token_id, end_of_turn_id(self._render, probe, self.tokenizer)]
        return sorted({i for i in ids if i is not None})

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _tokenize(self, prompt_msgs, answer):
        flat = flatten(prompt_msgs)
        if not any(AUDIO_MARK in m["content"] for m in flat if m["role"] == "user"):
            for m in flat:
                if m["role"] == "user":
                    m["content"] = AUDIO_MARK + m["content"]
                    break
        text = self._render(flat, True)
        before, _, after = text.partition(AUDIO_MARK)
        ans = None
        if answer is not None:
            ans = self._encode_text(answer_suffix_text(self._render, flat, answer, self.tokenizer.eos_token))
        return self._encode_text(before), self._encode_text(after.replace(AUDIO_MARK, "")), ans

    # ---- data ---------------------------------------------------------------------------
    def collate(self, records: list[dict[str, Any]], answers: bool = True) -> dict[str, Any]:
        k = self.core.config.stack
        pad = self.tokenizer.pad_token_id
        rows, labels, feats, n_audio = [], [], [], []
        for rec in records:
            x = self.features.get(rec)
            n = math.ceil(len(x) / k)
            feats.append(x)
            n_audio.append(n)
            before, after, ans = self._prompts(prompt_messages(rec), answer_of(rec) if answers else None)
            ids = before + [-1] * n + after  # -1 marks an audio slot
            lab = [-100] * len(ids)
            if answers:
                ids, lab = ids + ans, lab + ans
            rows.append(ids)
            labels.append(lab)
        left = not answers
        ids = pad_rows(rows, -2, left=left)
        mask = (ids != -2).long()
        positions = ids == -1
        ids = ids.masked_fill(ids < 0, pad)
        nmax = max(n_audio)
        dim = feats[0].shape[1]
        af = torch.zeros(len(records), nmax * k, dim)
        am = torch.zeros(len(records), nmax, dtype=torch.bool)
        for i, (x, n) in enumerate(zip(feats, n_audio)):
            af[i, : len(x)] = torch.from_numpy(x)
            am[i, :n] = True
        out = {
            "input_ids": ids,
            "attention_mask": mask,
            "audio_features": af,
            "audio_mask": am,
            "audio_positions": positions,
        }
        if answers:
            out["labels"] = pad_rows(labels, -100, left=False)
        return out

    def _to(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}

    # ---- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, prompt: dict[str, Any], opts: GenerationOptions) -> torch.Tensor:
        p = self._to(prompt)
        core = self.core
        was_training = core.training
        core.eval()
        try:
            emb = core.embed(p["input_ids"], p["audio_positions"], p["audio_features"], p["audio_mask"])
            if opts.seed is not None:
                torch.manual_seed(opts.seed)
            out = core.lm.generate(
                inputs_embeds=emb,
                attention_mask=p["attention_mask"],
                suppress_tokens=self.suppress_ids or None,
                **generation_kwargs(opts, self.tokenizer.pad_token_id, self.eos_ids),
            )
        finally:
            core.train(was_training)
        return repeat_greedy(_pad_after_eos(out, self.eos_ids, self.tokenizer.pad_token_id), opts)

    def decode(self, ids) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---- scoring ------------------------------------------------------------------------
    def completion_logits(self, prompt, completion_ids, return_hidden: bool = False):
        p = self._to(prompt)
        comp = completion_ids.to(self.device)
        b = p["input_ids"].shape[0]
        r = comp.shape[0] // b
        rep = {k: v.repeat_interleave(r, dim=0) for k, v in p.items() if torch.is_tensor(v)}
        core = self.core
        emb = core.embed(rep["input_ids"], rep["audio_positions"], rep["audio_features"], rep["audio_mask"])
        emb = torch.cat([emb, core.lm.get_input_embeddings()(comp)], dim=1)
        mask = torch.cat([rep["attention_mask"], torch.ones_like(comp)], dim=1)
        plen, t = rep["input_ids"].shape[1], comp.shape[1]
        out = core.lm(
            inputs_embeds=emb,
            attention_mask=mask,
            position_ids=positions_from_mask(mask),
            output_hidden_states=return_hidden,
            logits_to_keep=t + 1,
            use_cache=False,
        )
        logits = out.logits[:, :t]
        hidden = out.hidden_states[-1][:, plen - 1 : plen - 1 + t] if return_hidden else None
        return logits, hidden

    # ---- persistence --------------------------------------------------------------------
    def save(self, out_dir, extra: dict[str, Any] | None = None) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.meta.items() if k not in ("family", "lora")}
        meta.update(family=self.family, lora=self.is_lora())
        meta.update(extra or {})
        self._ecosystem_files()
        if self.is_lora():
            # the adapter (with the projection, trained in full) beside the base model it adapts
            self.model.save_pretrained(out)
            self.model.get_base_model().save_pretrained(out / "base")
        else:
            self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        _copy_note_encoder(self.core.config.encoder, out)
        write_meta(out, meta)
        from abcscribe.core.files import atomic_write
        from abcscribe.core.models.card import model_card

        atomic_write(out / "README.md", model_card(meta, self._parts()))

    def _ecosystem_files(self) -> None:
        """What ``save_pretrained`` writes beyond the weights: ``auto_map`` (with
        modeling_abcscribe.py beside it) and a generation_config.json that stops where
        ``transcribe`` stops."""
        core = self.core
        core.config.auto_map = {"AutoModelForCausalLM": "modeling_abcscribe.ComposedModel"}
        gen = core.generation_config
        gen.eos_token_id = self.eos_ids if len(self.eos_ids) > 1 else self.eos_ids[0]
        gen.pad_token_id = self.tokenizer.pad_token_id
        gen.use_cache = True

    def _parts(self) -> dict[str, Any]:
        cfg = self.core.config
        tc = cfg.text_config
        lm = self.meta.get("lm") or (f"{tc.model_type} built from a config ({tc.num_hidden_layers} layers "
                                     f"of {tc.hidden_size}, random start)")
        return {
            "language model": lm,
            "audio encoder": f"{cfg.encoder} ({cfg.audio_dim} values per frame, {cfg.frame_rate:g} frames/s, "
                             f"{cfg.window_seconds:g} s windows)",
            "projector": f"{cfg.projector}, {cfg.stack} frames stacked per audio token",
            "parameters": f"{sum(p.numel() for p in self.core.parameters()):,}",
            "LoRA": "yes (adapter here, base model in base/)" if self.is_lora() else "no",
        }

    def train_mode(self, lora: bool, r: int = 16, alpha: int = 32, dropout: float = 0.05) -> None:
        """Prepare for training: LoRA on the LM (projection trained in full), or everything."""
        if lora and not self.is_lora():
            from peft import LoraConfig, get_peft_model

            targets = lora_targets(self.model.lm)
            cfg = LoraConfig(
                r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                modules_to_save=["projector"], bias="none",
            )  # fmt: skip
            self.model = get_peft_model(self.model, cfg)
        self.model.train()


def _pad_after_eos(ids: torch.Tensor, eos_ids: list[int], pad: int) -> torch.Tensor:
    """Pad every token after a row's first EOS (generate may keep sampling for finished rows
    when several EOS ids exist); the EOS itself stays."""
    is_eos = torch.zeros_like(ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= ids == e
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return ids.masked_fill(after, pad)


def build_composed(
    lm: str | PretrainedConfig | PreTrainedModel,
    tokenizer=None,
    *,
    encoder: str = "cqt",
    projector: str = "mlp",
    stack: int = 2,
    device: str = "cpu",
    dtype=None,
) -> ComposedAudioLM:
    """A composed model around ``lm``: a directory or hub id of a causal LM (weights loaded), a
    config (random weights), or a model. The projection starts random."""
    from transformers import AutoTokenizer

    from abcscribe.core.models.features import get_encoder

    if encoder.startswith("notes:"):  # the model must find its encoder from any folder
        encoder = "notes:" + str(Path(encoder[len("notes:"):]).resolve())
    enc = get_encoder(encoder)
    pretrained = None
    if isinstance(lm, (str, Path)):
        try:
            pretrained = AutoModelForCausalLM.from_pretrained(str(lm), dtype=dtype)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(str(lm))
        except OSError as e:
            raise UserError(f"{lm}: cannot load a causal language model ({e})") from None
        text_config = pretrained.config
    elif isinstance(lm, PreTrainedModel):
        pretrained, text_config = lm, lm.config
    else:
        text_config = lm
    if tokenizer is None:
        raise UserError("a composed model built from a config needs a tokenizer")
    cfg = ComposedConfig(
        text_config=text_config.to_dict(),
        audio_dim=int(enc.dim),
        stack=int(stack),
        projector=projector,
        encoder=encoder,
        frame_rate=float(enc.frame_rate),
        sample_rate=int(enc.sample_rate),
        window_seconds=float(getattr(enc, "window_seconds", None) or 30.0),
    )
    model = ComposedModel(cfg)
    if pretrained is not None:
        model.lm.load_state_dict(pretrained.state_dict())
        model.lm.generation_config = pretrained.generation_config
    if dtype is not None:
        model = model.to(dtype)
    model = model.to(device)
    meta = {"lm": str(lm) if isinstance(lm, (str, Path)) else None, "encoder": encoder}
    return ComposedAudioLM(model, tokenizer, device=device, meta=meta)


NOTE_ENCODER_DIR = "note_encoder"


def _copy_note_encoder(encoder: str, out: Path) -> None:
    """A model that reads abcscribe's note encoder carries a copy of it (``out/note_encoder``),
    so the folder works wherever it is moved."""
    import shutil

    if not encoder.startswith("notes:"):
        return
    src, dst = Path(encoder[len("notes:"):]), out / NOTE_ENCODER_DIR
    if src.resolve() == dst.resolve():
        return
    dst.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors", "pretrain.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def _own_note_encoder(model: ComposedModel, path: Path) -> None:
    """Read features with the copy of the note encoder saved beside the model, if any."""
    if model.config.encoder.startswith("notes:") and (path / NOTE_ENCODER_DIR / "config.json").is_file():
        model.config.encoder = "notes:" + str((path / NOTE_ENCODER_DIR).resolve())


def load_composed(path: str | Path, meta: dict, *, device="cpu", dtype=None, train=False) -> ComposedAudioLM:
    from transformers import AutoTokenizer

    path = Path(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    if meta.get("lora"):
        from peft import PeftModel

        base = ComposedModel.from_pretrained(str(path / "base"), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=train)
    else:
        model = ComposedModel.from_pretrained(str(path), dtype=dtype)
    _own_note_encoder(model.get_base_model() if meta.get("lora") else model, path)
    model.to(device)
    model.train(train)
    if not train:
        for p_ in model.parameters():
            p_.requires_grad_(False)
    return ComposedAudioLM(model, tok, device=device, meta=meta)
