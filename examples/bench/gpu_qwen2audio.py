"""SFT and PPO steps of a Qwen2-Audio model with the real 7B configuration and random weights
(bf16, LoRA r=128, batch 8, 30 s of audio per sample) on a CUDA GPU: tokens/s and peak memory.

    python examples/bench/gpu_qwen2audio.py [--json] [--quick] [--batch 8] [--answer-tokens 512]

The PPO step has the memory shape of abcscribe's loop (core.train.ppo): sampled completions
with the KV cache, the reference policy as the same weights with the LoRA adapter disabled (no
second copy), a value head on the last hidden state, one clipped-surrogate backward pass.
Without CUDA it prints a skip figure and exits 0 (the figure asks for a GPU)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def qwen2_audio_7b_config(layers: int | None = None):
    from transformers import Qwen2AudioConfig

    # Published Qwen2-Audio-7B dimensions: a Whisper-large-v3-sized audio encoder and a
    # Qwen-7B-sized decoder.
    return Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", d_model=1280, encoder_layers=32,
            encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128,
            max_source_positions=1500,
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=156032, hidden_size=4096, intermediate_size=11008,
            num_hidden_layers=layers or 32, num_attention_heads=32, num_key_value_heads=32,
            max_position_embeddings=8192, rms_norm_eps=1e-5,
        ),
        audio_token_index=151646,
    )


def build(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    cfg = qwen2_audio_7b_config(args.layers)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2AudioForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    lora = LoraConfig(
        r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )
    model = get_peft_model(model, lora)
    model.config.use_cache = False
    return model, cfg, n_params


def batch_inputs(cfg, b: int, prompt_tokens: int, answer_tokens: int):
    import torch

    audio_tokens = 750  # 30 s -> 3000 mel frames -> 1500 encoder frames -> pooled to 750
    g = torch.Generator(device="cuda").manual_seed(0)
    feats = torch.randn(b, 128, 3000, device="cuda", dtype=torch.bfloat16, generator=g)
    fmask = torch.ones(b, 3000, dtype=torch.long, device="cuda")
    text = torch.randint(0, 150000, (b, prompt_tokens + answer_tokens), device="cuda", generator=g)
    audio = torch.full((b, audio_tokens), cfg.audio_token_index, device="cuda")
    ids = torch.cat([text[:, :8], audio, text[:, 8:]], dim=1)
    labels = ids.clone()
    labels[:, : 8 + audio_tokens + prompt_tokens - 8] = -100
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=feats,
                feature_attention_mask=fmask, labels=labels)


def sft_steps(model, cfg, args):
    import torch

    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inp = batch_inputs(cfg, args.batch, 32, args.answer_tokens)
    ntok = inp["input_ids"].numel()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(**inp).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i:  # the first step warms up kernels
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del opt
    return ntok * len(times) / sum(times), sum(times) / len(times), peak


def ppo_step(model, cfg, args):
    import torch

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hidden = cfg.text_config.hidden_size
    value_head = torch.nn.Linear(hidden, 1, device="cuda", dtype=torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    prompt = batch_inputs(cfg, args.batch, 32, 0)
    prompt.pop("labels")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    # 1. rollouts with the KV cache (random weights never stop early: fixed length)
    model.eval()
    model.config.use_cache = True
    with torch.no_grad():
        out = model.generate(**prompt, do_sample=True, temperature=1.0, max_new_tokens=args.gen_tokens,
                             min_new_tokens=args.gen_tokens, use_cache=True)
    torch.cuda.synchronize()
    t_gen = time.perf_counter() - t0
    model.config.use_cache = False
    full = dict(prompt)
    full["input_ids"] = out
    full["attention_mask"] = torch.ones_like(out)
    n_new = out.shape[1] - prompt["input_ids"].shape[1]
    # 2. reference log-probs: the same weights with the adapter disabled
    with torch.no_grad(), model.disable_adapter():
        ref_logits = model(**full).logits[:, -n_new - 1 : -1].float()
        ref_lp = torch.log_softmax(ref_logits, -1).gather(-1, out[:, -n_new:, None])[..., 0]
        del ref_logits
    # 3. policy forward/backward: clipped surrogate + value loss
    model.train()
    res = model(**full, output_hidden_states=True)
    logits = res.logits[:, -n_new - 1 : -1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, out[:, -n_new:, None])[..., 0]
    values = value_head(res.hidden_states[-1][:, -n_new - 1 : -1]).float()[..., 0]
    adv = torch.randn_like(lp)
    ratio = torch.exp(lp - lp.detach())
    pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    kl = (lp - ref_lp).mean()
    vloss = ((values - adv) ** 2).mean()
    (pg + 0.05 * kl + 0.1 * vloss).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    t_all = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30
    return t_gen, t_all, peak, args.batch * n_new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="4 decoder layers instead of 32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=128)
    ap.add_argument("--answer-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None)
    args = ap.parse_args()
    if args.quick and args.layers is None:
        args.layers = 4
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        print("gpu_qwen2audio: no CUDA device; skipped", file=sys.stderr)
        if args.json:
            print(json.dumps({"name": "gpu_qwen2audio", "figures": [
                {"metric": "skipped (no CUDA device)", "value": None, "unit": "", "target": "needs a GPU"}]}))
        return 0
    model, cfg, n_params = build(args)
    name = torch.cuda.get_device_name()
    print(f"{name}: Qwen2-Audio 7B config ({n_params / 1e9:.2f} B params, "
          f"{cfg.text_config.num_hidden_layers} decoder layers), LoRA r={args.lora_r}, batch {args.batch}")
    tps, step_s, sft_peak = sft_steps(model, cfg, args)
    print(f"sft: {tps:,.0f} tokens/s, {step_s:.2f} s/step, peak {sft_peak:.1f} GiB")
    t_gen, t_all, ppo_peak, new_tokens = ppo_step(model, cfg, args)
    print(f"ppo step: {t_all:.1f} s ({t_gen:.1f} s generating {new_tokens} tokens), peak {ppo_peak:.1f} GiB, "
          f"ratio to sft {ppo_peak / sft_peak:.2f}")
    if args.json:
        print(json.dumps({"name": "gpu_qwen2audio", "device": name, "figures": [
            {"metric": "sft tokens/s (7B cfg, LoRA r128, b8)", "value": tps, "unit": "tok/s", "target": None},
            {"metric": "sft peak GPU memory", "value": sft_peak, "unit": "GiB", "target": "< 40 (seed: A100 40GB)"},
            {"metric": "ppo step time", "value": t_all, "unit": "s", "target": None},
            {"metric": "ppo peak GPU memory", "value": ppo_peak, "unit": "GiB", "target": None},
            {"metric": "ppo/sft peak memory", "value": ppo_peak / sft_peak, "unit": "x", "target": "<= 1.5"},
        ]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
