"""Reinforcement learning against the music reward: PPO with a value head, or GRPO-style group
advantages, for any ``AudioLM``.

One step, top to bottom (``train``):
  1. rollouts   sample ``samples_per_prompt`` completions for ``batch_size`` prompts
  2. reward     ``core.reward.score(ref_abc, completion)`` (+ a format bonus); a reward that
                raises or is NaN gives that sample the minimum reward and a warning. A model
                with a note encoder is rewarded for what transcribe writes: the completion
                revised by ear (``core.listen.revise``; ``revise=False``: as sampled)
  3. log-probs  per token under the policy (before the update) and the reference policy
                (``AudioLM.reference()``: LoRA adapter off, or a frozen copy)
  4. advantages ``gae``: per-token reward = -kl_coef * KL, + the score on the last token, a value
                head on the LM's hidden states, GAE(gamma, lam), whitened over the batch;
                ``group``: each sample's score against the mean/std of its prompt's samples
                (no value model), KL as a loss term
  5. update     ``ppo_epochs`` passes of clipped-surrogate updates over mini-batches
                (+ entropy bonus, gradient clipping), one JSONL log line per step

Several processes (``torchrun``, ``accelerate launch``): every process draws its own
``batch_size`` prompts of one shared shuffled order and samples with its own seed; rewards and
advantages are computed per process, with the batch statistics (whitening, the KL controller)
taken over all of them; gradients are averaged before each optimiser step, so the weights stay
the same everywhere. The main process alone writes the log (one row per step, with every
process's figures) and the model.

Small on purpose: no framework on top of torch; ``accelerate`` places tensors and averages
gradients across processes."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

from abcscribe.core.distributed import Ranks
from abcscribe.core.errors import UserError
from abcscribe.core.modeldir import save_atomically
from abcscribe.core.train.config import PPOConfig
from abcscribe.core.models.base import AudioLM, GenerationOptions
from abcscribe.core.models.common import one_thread_for_small_cpu_model

MIN_REWARD = 0.0  # the floor of core.reward's [0, 1] reward: what a failed reward becomes
LOG_NAME = "log.jsonl"
STATE_NAME = "ppo_state.json"  # step, RNGs, order: written last, so its presence means complete
OPTIMIZER_NAME = "optimizer.safetensors"  # the optimiser's tensors and the torch RNG
VALUE_HEAD_NAME = "value_head.safetensors"

RewardFn = Callable[[str, str], "tuple[float, dict[str, float]]"]
Written = Callable[[dict[str, Any], str], str]  # (prompt record, completion) -> the text scored


# ---- reward ------------------------------------------------------------------------------------
def music_reward(weights: dict[str, float] | None = None, format_bonus: float = 0.0) -> RewardFn:
    """The reward of ``abcscribe score`` for (reference ABC, completion): ``Score.reward`` plus
    ``format_bonus`` when the completion parses as ABC without warnings. Components come back
    for the log."""
    from abcscribe.core.reward import score

    def reward(ref_abc: str, completion: str) -> tuple[float, dict[str, float]]:
        s = score(ref_abc, completion, weights)
        parts = {k: float(v) for k, v in s.as_dict().items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        r = float(s.reward)
        if format_bonus and s.parse_warnings == 0 and completion.strip():
            r += format_bonus
        return r, parts

    return reward


def safe_reward(fn: RewardFn, ref_abc: str, completion: str, warn: Callable[[str], None],
                written: Callable[[str], str] | None = None) -> tuple[float, dict[str, float], bool]:
    """``fn`` guarded: an exception or a non-finite value gives ``MIN_REWARD`` and a warning, so
    one bad sample never stops training. ``written`` turns the completion into the text scored
    (inside the guard). Returns (reward, components, ok)."""
    try:
        r, parts = fn(ref_abc, written(completion) if written else completion)
        r = float(r)
    except Exception as e:  # noqa: BLE001 - any failure of the scorer is the sample's problem
        warn(f"reward failed ({type(e).__name__}: {e}); sample gets the minimum reward {MIN_REWARD}")
        return MIN_REWARD, {}, False
    if not math.isfinite(r):
        warn(f"reward was {r}; sample gets the minimum reward {MIN_REWARD}")
        return MIN_REWARD, {}, False
    return r, parts, True


def by_ear(lm: AudioLM, revise: bool = True) -> Written:
    """What ``transcribe`` writes for a completion of a prompt record: for a model that hears
    (and ``revise``) the completion revised by what its note encoder hears in the record's clip
    (``core.listen.revise``; each clip heard once), for any other model the completion."""
    from abcscribe.core.listen import hears, listen
    from abcscribe.core.listen import revise as revise_by_ear

    if not (revise and hears(lm)):
        return lambda rec, text: text
    heard: dict[int, tuple[dict[str, Any], Any]] = {}  # id(record) -> (record, what was heard)

    def written(rec: dict[str, Any], text: str) -> str:
        if id(rec) not in heard:
            with torch.no_grad():
                heard[id(rec)] = (rec, listen(lm, rec))  # the record kept: its id stays its own
        return revise_by_ear(text, heard[id(rec)][1])

    return written


# ---- the value head (gae only) -----------------------------------------------------------------
class ValueHead(nn.Module):
    """A small MLP from the LM's last hidden state to a scalar value. It reads detached hidden
    states: the value loss trains the head only and never pulls on the policy's weights."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden.detach().float()).squeeze(-1)


# ---- small tensor helpers ----------------------------------------------------------------------
def completion_mask(ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1.0 on a completion's tokens up to and including its first EOS, 0.0 on the padding after."""
    T = ids.shape[1]
    pos = torch.arange(T, device=ids.device).expand_as(ids)
    if eos_id is None:
        return torch.ones_like(ids, dtype=torch.float)
    is_eos = ids == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(ids[:, 0], T - 1))
    return (pos <= first[:, None]).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def group_advantages(rewards: torch.Tensor, k: int, scale: str = "batch",
                     mean: Callable[[torch.Tensor], torch.Tensor] = torch.mean) -> torch.Tensor:
    """Each sample's reward minus the mean of its prompt's ``k`` samples (prompt-major order),
    divided by the standard deviation of those differences over the whole batch
    (``scale="batch"``) or within each prompt (``scale="group"``, the GRPO paper's choice).
    Per-prompt scaling blows tiny differences (a tempo 2 BPM closer) up to the size of real
    ones; batch scaling keeps their proportions. A prompt whose samples all score the same
    teaches nothing (0). ``mean`` takes the batch mean (over every process, under a
    launcher)."""
    g = rewards.view(-1, k)
    centred = g - g.mean(1, keepdim=True)
    if scale == "group":
        adv = centred / (g.std(1, keepdim=True, unbiased=False) + 1e-4)
    else:
        adv = centred / (mean(centred.pow(2)).sqrt() + 1e-4)
    return adv.reshape(-1)


def gae_advantages(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over completion tokens; returns (advantages, returns)."""
    N, T = token_rewards.shape
    adv = torch.zeros_like(token_rewards)
    last = torch.zeros(N, device=token_rewards.device)
    for t in reversed(range(T)):
        nxt = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        next_value = values[:, t + 1] * nxt if t + 1 < T else torch.zeros_like(last)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * nxt * last
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


def token_stats(lm: AudioLM, prompt: dict[str, Any], ids: torch.Tensor, temperature: float,
                value_head: ValueHead | None = None):
    """Per-token log-prob of ``ids``, entropy, and values (or None) under the current weights."""
    logits, hidden = lm.completion_logits(prompt, ids, return_hidden=value_head is not None)
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    values = value_head(hidden) if value_head is not None else None
    return logp, entropy, values


# ---- one batch of experience ---------------------------------------------------------------------
@dataclass
class Chunk:
    """Prompts of one mini-batch (collated once) and everything the update needs for them."""

    prompt: dict[str, Any]
    ids: torch.Tensor  # [n, T] completion tokens
    mask: torch.Tensor  # [n, T]
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    values: torch.Tensor | None = None
    adv: torch.Tensor | None = None  # [n, T]
    returns: torch.Tensor | None = None


def _to(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---- the loop ------------------------------------------------------------------------------------
@dataclass
class TrainState:
    step: int = 0
    kl_coef: float = 0.0
    order: list[int] = field(default_factory=list)  # the rest of the epoch's shuffled order
    eval_before: dict[str, Any] | None = None


def train(
    lm: AudioLM,
    records: list[dict[str, Any]],
    out_dir: str | Path,
    cfg: PPOConfig,
    *,
    eval_records: list[dict[str, Any]] | None = None,
    reward_fn: RewardFn | None = None,
    resume_from: str | Path | None = None,
    progress: Callable[[Iterable[int], int], Iterator[int]] | None = None,
    warn: Callable[[str], None] | None = None,
    report: Callable[[dict[str, Any], int], None] | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Train ``lm`` in place on ``records`` (``transcribe`` records: the reference is
    ``record["abc"]``) and save it to ``out_dir`` with ``AudioLM.save``. Writes
    ``out_dir/log.jsonl`` (one line per step, plus eval lines). Returns a summary: steps, and
    ``eval_before``/``eval_after`` (greedy mean reward on ``eval_records``) when given.
    ``resume_from``: a folder ``save`` wrote (optimiser, RNG, step); the caller loads the
    model's weights from it."""
    cfg.check()
    if not records:
        raise UserError("ppo: no training records")
    warn = warn or (lambda m: warnings.warn(m, stacklevel=2))
    reward_fn = reward_fn or music_reward(cfg.weights, cfg.format_bonus)
    written = by_ear(lm, cfg.revise)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=str(getattr(lm, "device", "cpu")) == "cpu")
    ranks = Ranks(accelerator.process_index, accelerator.num_processes,
                  accelerator.local_process_index)
    device = lm.device
    one_thread_for_small_cpu_model(lm)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    k = cfg.samples_per_prompt
    gen = GenerationOptions(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, num_samples=k)
    eos = getattr(lm.tokenizer, "eos_token_id", None)

    # Dropout off everywhere: the log-probs of the update must be those the rollout saw.
    lm.model.eval()
    params = [p for p in lm.model.parameters() if p.requires_grad]
    if not params:
        raise UserError("ppo: the model has no trainable parameters")
    value_head = None
    if cfg.advantage == "gae":
        value_head = ValueHead(_hidden_size(lm)).to(device)
        params += list(value_head.parameters())
    _same_weights(params, ranks)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt = accelerator.prepare(opt)

    state = TrainState(kl_coef=cfg.kl_coef)
    log_path = out / LOG_NAME

    def log(row: dict[str, Any]) -> None:
        if ranks.is_main:
            _log(log_path, row)

    summary: dict[str, Any] = {}
    if resume_from is not None:
        # everything a step draws on comes back: weights (loaded by the caller), optimiser,
        # RNGs, the rest of the epoch's order, the KL coefficient: the run goes on exactly
        state = _load_state(Path(resume_from), opt, value_head, rng)
        if state.eval_before is not None:
            summary["eval_before"] = state.eval_before
    elif log_path.exists() and ranks.is_main:
        log_path.unlink()  # a fresh run starts a fresh log

    if eval_records and "eval_before" not in summary:
        summary["eval_before"] = _evaluate_shared(lm, eval_records, reward_fn, cfg, warn, ranks, written)
        log({"eval": "before", "step": state.step, **summary["eval_before"]})
    state.eval_before = summary.get("eval_before")

    steps: Iterable[int] = range(state.step, cfg.max_steps)
    if progress is not None:
        steps = progress(steps, cfg.max_steps - state.step)
    order = state.order  # the same on every process: each takes its own slice of it
    need = cfg.batch_size * ranks.size
    for step in steps:
        t0 = time.monotonic()
        while len(order) < need:  # an epoch's shuffled order, refilled as it runs out
            more = list(range(len(records)))
            rng.shuffle(more)
            order += more
        mine = order[ranks.rank * cfg.batch_size: (ranks.rank + 1) * cfg.batch_size]
        batch = [records[i] for i in mine]
        del order[:need]

        # 1-3: rollouts, rewards, log-probs under policy and reference
        with torch.no_grad():
            prompt = _to(lm.collate(batch, answers=False), device)
            ids = lm.generate_ids(prompt, GenerationOptions(**{**asdict(gen), "seed": _sampling_seed(cfg.seed, step, ranks)}))
            ids = ids.to(device)
        phases = {"generate": time.monotonic() - t0}
        texts = lm.decode(ids)
        rewards, parts, failed = [], [], 0
        for i, text in enumerate(texts):
            rec = batch[i // k]
            r, p, ok = safe_reward(reward_fn, rec.get("abc", ""), text, warn, lambda t: written(rec, t))
            rewards.append(r), parts.append(p)
            failed += not ok
        rewards_t = torch.tensor(rewards, dtype=torch.float, device=device)
        phases["reward"] = time.monotonic() - t0 - sum(phases.values())
        chunks = _experience(lm, batch, ids, eos, cfg, value_head, device)
        phases["experience"] = time.monotonic() - t0 - sum(phases.values())

        # 4: advantages
        kl_seq = torch.cat([((c.old_logp - c.ref_logp) * c.mask).sum(1) for c in chunks])
        if cfg.advantage == "group":
            adv_seq = group_advantages(rewards_t, k, cfg.group_scale,
                                       mean=lambda x: _mean_everywhere(x, accelerator))
            at = 0
            for c in chunks:
                n = c.ids.shape[0]
                c.adv = adv_seq[at: at + n, None] * c.mask
                at += n
        else:
            _gae(chunks, rewards_t, state.kl_coef, cfg, accelerator)

        # 5: the update
        stats = _update(lm, chunks, opt, params, value_head, cfg, state.kl_coef, accelerator)
        phases["update"] = time.monotonic() - t0 - sum(phases.values())  # advantages too
        figures = ranks.gather({
            "prompts": [records[i].get("id", i) for i in mine], "rewards": rewards,
            "parts": parts, "failed": failed, "kl": kl_seq.tolist(),
            "lengths": torch.cat([c.mask.sum(1) for c in chunks]).tolist(), "stats": stats,
            "seconds": time.monotonic() - t0, "phases": phases,
        })
        row = _step_row(step + 1, figures)
        if cfg.kl_target is not None:  # proportional controller, at most +-10% per step
            err = max(-0.2, min(0.2, row["kl"] / cfg.kl_target - 1.0))
            state.kl_coef *= 1.0 + 0.5 * err
        row["kl_coef"] = state.kl_coef
        state.step = step + 1
        log(row)
        if report is not None and ranks.is_main:
            report(row, state.step)
        if cfg.save_steps and state.step % cfg.save_steps == 0 and state.step < cfg.max_steps:
            save(lm, out / f"checkpoint-{state.step}", cfg, state, opt, value_head, rng, accelerator)

    if eval_records:
        summary["eval_after"] = _evaluate_shared(lm, eval_records, reward_fn, cfg, warn, ranks, written)
        log({"eval": "after", "step": state.step, **summary["eval_after"]})
    summary["steps"] = state.step
    save(lm, out, cfg, state, opt, value_head, rng, accelerator, summary=summary)
    return summary


# ---- several processes ---------------------------------------------------------------------------
def _sampling_seed(seed: int, step: int, ranks: Ranks) -> int:
    """Each process's sampling seed of a step: distinct across steps and processes (one
    process: the seed it always had)."""
    return seed * 100003 + step * ranks.size + ranks.rank


def _mean_everywhere(x: torch.Tensor, accelerator) -> torch.Tensor:
    """The mean of ``x``'s elements over every process."""
    if accelerator.num_processes <= 1:
        return x.mean()
    s = torch.stack([x.sum(), torch.tensor(float(x.numel()), device=x.device)])
    s = accelerator.reduce(s, reduction="sum")
    return s[0] / s[1].clamp(min=1.0)


def _masked_mean_everywhere(x: torch.Tensor, mask: torch.Tensor, accelerator) -> torch.Tensor:
    if accelerator.num_processes <= 1:
        return masked_mean(x, mask)
    s = accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]), reduction="sum")
    return s[0] / s[1].clamp(min=1.0)


def _same_weights(params: list[torch.Tensor], ranks: Ranks) -> None:
    """Every process starts from the main process's trainable weights (the value head is
    random; a model built rather than loaded may be too)."""
    if not ranks.several:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def _step_row(step: int, figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The log row of one step from every process's figures (one process: its own)."""
    rewards = torch.tensor([r for f in figures for r in f["rewards"]], dtype=torch.float)
    kl = [v for f in figures for v in f["kl"]]
    lengths = [v for f in figures for v in f["lengths"]]
    stats = {key: (sum(f["stats"][key] for f in figures) / len(figures)
                   if figures[0]["stats"][key] is not None else None)
             for key in figures[0]["stats"]}
    seconds = max(f["seconds"] for f in figures)
    row = {
        "step": step,
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(unbiased=False).item(),
        **{f"reward_{name}": v for name, v in _mean_parts([p for f in figures for p in f["parts"]]).items()},
        "reward_failures": sum(f["failed"] for f in figures),
        "kl": sum(kl) / max(len(kl), 1),
        "kl_coef": None,  # the caller's, after its controller
        **stats,
        "response_length": sum(lengths) / max(len(lengths), 1),
        "samples_per_s": len(rewards) / seconds,
        "seconds": seconds,
    }
    if len(figures) > 1:  # what each process drew and how it fared
        row["processes"] = [{"prompts": f["prompts"], "reward_mean": sum(f["rewards"]) / len(f["rewards"]),
                             "samples_per_s": len(f["rewards"]) / f["seconds"],
                             "phases": {k: round(v, 3) for k, v in f["phases"].items()}} for f in figures]
    return row


def _evaluate_shared(lm, records, reward_fn, cfg: PPOConfig, warn, ranks: Ranks,
                     written: Written | None = None) -> dict[str, Any]:
    """``evaluate`` with the records split over the processes; the same result on each."""
    if not ranks.several:
        return evaluate(lm, records, reward_fn, cfg.max_new_tokens, warn, written=written)
    idx = ranks.take(records)
    part = evaluate(lm, [records[i] for i in idx], reward_fn, cfg.max_new_tokens, warn,
                    written=written)
    everyone = ranks.gather((idx, part))
    rewards: list[float] = [0.0] * len(records)
    for ids, res in everyone:
        for i, r in zip(ids, res["rewards"]):
            rewards[i] = r
    n = len(records)
    out: dict[str, Any] = {"reward_mean": sum(rewards) / max(n, 1), "n": n}
    keys = sorted({key for _, res in everyone for key in res if key.startswith("reward_")} - {"reward_mean"})
    for key in keys:
        have = [(res[key], res["n"]) for _, res in everyone if key in res and res["n"]]
        if have:
            out[key] = sum(v * m for v, m in have) / sum(m for _, m in have)
    out["rewards"] = rewards
    return out


def _experience(lm, batch, ids, eos, cfg, value_head, device) -> list[Chunk]:
    """Split the batch into mini-batches of whole prompts; per chunk, collate its prompts once
    and compute old/reference log-probs (and values) without gradients."""
    k = cfg.samples_per_prompt
    per = max(1, cfg.mini_batch_size // k)  # prompts per chunk
    mask_all = completion_mask(ids, eos)
    chunks = []
    for s in range(0, len(batch), per):
        rows = slice(s * k, min(len(batch), s + per) * k)
        mask = mask_all[rows]
        T = max(1, int(mask.sum(1).max().item()))  # drop columns that are padding in every row
        c_ids, mask = ids[rows, :T], mask[:, :T]
        prompt = _to(lm.collate(batch[s: s + per], answers=False), device)
        with torch.no_grad():
            old_logp, _, values = token_stats(lm, prompt, c_ids, cfg.temperature, value_head)
            with lm.reference():
                ref_logp, _, _ = token_stats(lm, prompt, c_ids, cfg.temperature)
        chunks.append(Chunk(prompt, c_ids, mask, old_logp, ref_logp, values))
    return chunks


def _gae(chunks: list[Chunk], rewards: torch.Tensor, kl_coef: float, cfg: PPOConfig,
         accelerator) -> None:
    """Per-token rewards (-kl_coef * KL, the score on the last token), GAE, whitening over
    the tokens of every process."""
    at = 0
    for c in chunks:
        n = c.ids.shape[0]
        tok_r = -kl_coef * (c.old_logp - c.ref_logp) * c.mask
        last = (c.mask.sum(1) - 1).long().clamp(min=0)
        tok_r[torch.arange(n), last] += rewards[at: at + n]
        at += n
        c.adv, c.returns = gae_advantages(tok_r, c.values, c.mask, cfg.gamma, cfg.lam)
    # whiten over every token of the batch: the step size no longer depends on reward scale
    flat_adv = torch.cat([c.adv.flatten() for c in chunks])
    flat_mask = torch.cat([c.mask.flatten() for c in chunks])
    mean = _masked_mean_everywhere(flat_adv, flat_mask, accelerator)
    std = _masked_mean_everywhere((flat_adv - mean) ** 2, flat_mask, accelerator).sqrt()
    for c in chunks:
        c.adv = (c.adv - mean) / (std + 1e-8) * c.mask


def _update(lm, chunks, opt, params, value_head, cfg, kl_coef, accelerator) -> dict[str, float]:
    """``ppo_epochs`` passes over the chunks in a shuffled order, one optimiser step each."""
    sums: dict[str, float] = {}
    n = 0
    for _ in range(cfg.ppo_epochs):
        for j in torch.randperm(len(chunks)).tolist():
            c = chunks[j]
            logp, entropy, values = token_stats(lm, c.prompt, c.ids, cfg.temperature, value_head)
            ratio = torch.exp(logp - c.old_logp)
            pg1 = -c.adv * ratio
            pg2 = -c.adv * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
            policy_loss = masked_mean(torch.maximum(pg1, pg2), c.mask)
            ent = masked_mean(entropy, c.mask)
            loss = policy_loss - cfg.entropy_coef * ent
            if cfg.advantage == "group":  # KL as a loss term (k3 estimator, always >= 0)
                d = c.ref_logp - logp
                kl_term = masked_mean(torch.exp(d) - d - 1.0, c.mask)
                loss = loss + kl_coef * kl_term
            vloss = None
            if value_head is not None:
                vloss = 0.5 * masked_mean((values - c.returns) ** 2, c.mask)
                loss = loss + cfg.vf_coef * vloss
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            _sync_grads(params, accelerator)
            grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            with torch.no_grad():
                step_stats = {
                    "policy_loss": policy_loss.item(),
                    "entropy": ent.item(),
                    "clip_frac": masked_mean(((ratio - 1).abs() > cfg.clip).float(), c.mask).item(),
                    "approx_kl_old": masked_mean(c.old_logp - logp, c.mask).item(),
                    "grad_norm": float(grad_norm),
                }
                if vloss is not None:
                    step_stats["value_loss"] = vloss.item()
            for key, v in step_stats.items():
                sums[key] = sums.get(key, 0.0) + v
            n += 1
    out = {key: v / max(n, 1) for key, v in sums.items()}
    out.setdefault("value_loss", None)
    return out


def _sync_grads(params: list[torch.Tensor], accelerator) -> None:
    """Average gradients across processes (what DDP does). The model is not wrapped in DDP
    because ``AudioLM`` calls its own module's forward; on one process this does nothing."""
    if accelerator.num_processes <= 1:
        return
    for p in params:  # a parameter without a gradient on one process must not stall the others
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = accelerator.reduce(torch.cat([p.grad.flatten() for p in params]), reduction="mean")
    at = 0
    for p in params:  # one collective for all of them, not one per tensor
        n = p.numel()
        p.grad.copy_(flat[at: at + n].view_as(p.grad))
        at += n


def _mean_parts(parts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({key for p in parts for key in p})
    out = {}
    for key in keys:
        vals = [p[key] for p in parts if key in p and math.isfinite(p[key])]
        if vals:
            out[key] = sum(vals) / len(vals)
    out.pop("reward", None)  # already reward_mean
    return out


def _hidden_size(lm: AudioLM) -> int:
    cfg = getattr(lm.model, "config", None)
    for c in (cfg, getattr(cfg, "text_config", None), getattr(cfg, "lm_config", None)):
        h = getattr(c, "hidden_size", None)
        if isinstance(h, int):
            return h
    raise UserError("ppo --advantage gae: cannot find the model's hidden size for the value head")


def _log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ---- evaluation ----------------------------------------------------------------------------------
def evaluate(lm: AudioLM, records: list[dict[str, Any]], reward_fn: RewardFn,
             max_new_tokens: int, warn: Callable[[str], None] | None = None,
             batch_size: int = 8, written: Written | None = None) -> dict[str, Any]:
    """Mean reward (and mean of each reward component) of greedy transcriptions of
    ``records`` (their reference is ``abc``), with the per-record rewards; ``written`` turns
    a completion into what is scored (default: as generated)."""
    warn = warn or (lambda m: warnings.warn(m, stacklevel=2))
    written = written or (lambda rec, text: text)
    opts = GenerationOptions(temperature=0.0, max_new_tokens=max_new_tokens, num_samples=1)
    was_training = lm.model.training
    lm.model.eval()
    rewards, parts = [], []
    with torch.no_grad():
        for s in range(0, len(records), batch_size):
            batch = records[s: s + batch_size]
            for rec, outs in zip(batch, lm.generate(batch, opts)):
                r, p, _ = safe_reward(reward_fn, rec.get("abc", ""), outs[0], warn,
                                      lambda t: written(rec, t))
                rewards.append(r), parts.append(p)
    lm.model.train(was_training)
    n = len(rewards)
    return {"reward_mean": sum(rewards) / max(n, 1), "n": n,
            **{f"reward_{k}": v for k, v in _mean_parts(parts).items()}, "rewards": rewards}


# ---- saving and resuming -------------------------------------------------------------------------
def save(lm, out: Path, cfg: PPOConfig, state: TrainState, opt, value_head, rng, accelerator,
         summary: dict[str, Any] | None = None) -> None:
    """The model as ``AudioLM.save`` writes it (so ``transcribe`` loads it like an sft output),
    plus the optimiser, value head and RNG state that ``--resume`` needs."""
    if not accelerator.is_main_process:
        return
    extra = {"ppo": {"config": asdict(cfg), "steps": state.step, "processes": accelerator.num_processes}}
    if summary:
        extra["ppo"]["eval"] = {k: {"reward_mean": v["reward_mean"], "n": v["n"]}
                                for k, v in summary.items() if k.startswith("eval_")}
    tensors, opt_rest = _split_optimizer(opt.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    snapshot = {"step": state.step, "kl_coef": state.kl_coef, "optimizer": opt_rest,
                "py_rng": rng.getstate(), "order": list(state.order), "eval_before": state.eval_before}

    def write(folder: Path) -> None:
        from safetensors.torch import save_file

        from abcscribe.core.files import atomic_write

        lm.save(folder, extra=extra)
        if value_head is not None:
            save_file(value_head.state_dict(), str(folder / VALUE_HEAD_NAME))
        save_file(tensors, str(folder / OPTIMIZER_NAME))
        atomic_write(folder / STATE_NAME, json.dumps(snapshot) + "\n")  # last: means complete

    if out.name.startswith("checkpoint-"):
        save_atomically(out, write)  # a kill mid-save leaves no torn checkpoint to resume
    else:
        # the run folder holds the log and the checkpoints too: its files are replaced one by
        # one (each atomically), the state last
        write(out)


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state dict as safetensors-ready tensors ("<param>.<name>") and the
    JSON rest (param groups, non-tensor entries): no pickle needed to save or resume."""
    tensors, rest = {}, {}
    for pid, entries in sd["state"].items():
        for name, v in entries.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                rest.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "state": rest}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, _, name = key.partition(".")
        if pid.isdigit():
            state.setdefault(int(pid), {})[name] = v
    for pid, entries in rest.get("state", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def _load_state(ckpt: Path, opt, value_head, rng) -> TrainState:
    from safetensors.torch import load_file

    st = json.loads((ckpt / STATE_NAME).read_text(encoding="utf-8"))
    tensors = load_file(str(ckpt / OPTIMIZER_NAME))
    with contextlib.suppress(ValueError):  # a changed parameter set: start the optimiser afresh
        opt.load_state_dict(_join_optimizer(tensors, st["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    version, internal, gauss = st["py_rng"]
    rng.setstate((version, tuple(internal), gauss))
    if value_head is not None and (ckpt / VALUE_HEAD_NAME).exists():
        value_head.load_state_dict(load_file(str(ckpt / VALUE_HEAD_NAME)))
    return TrainState(step=int(st["step"]), kl_coef=float(st["kl_coef"]),
                      order=list(st.get("order", [])), eval_before=st.get("eval_before"))


# ---- a whole run, as `abcscribe ppo` makes it -----------------------------------------------
def read_prompts(path: str | Path, split: str | None, warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """The transcription prompts of an mkqa JSONL (records with task 'transcribe' and an
    'abc' reference); malformed lines and records are reported and skipped, as in sft."""
    from abcscribe.core.train.sft import read_records

    recs = [r for r in read_records(path, warn, need_answer=False, split=split)
            if r.get("task", "transcribe") == "transcribe" and isinstance(r.get("abc"), str)]
    if not recs:
        raise UserError(f"{path}: no 'transcribe' records with an 'abc' reference and their audio"
                        + (f" in split {split!r}" if split else ""))
    return recs


def run_ppo(data: str | Path, model: str, output_dir: str | Path, cfg: PPOConfig, *,
            eval_data: str | Path | None = None, split: str | None = None, resume: bool = False,
            overwrite: bool = False, device: str = "auto", dtype: str | None = None,
            report_to: str = "none", warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on the prompts of ``data`` into ``output_dir`` with the run-directory
    lifecycle sft has (a finished run skipped, --resume from the newest complete checkpoint,
    --overwrite). Returns the summary: output_dir, steps, eval rewards before/after."""
    from accelerate import Accelerator

    from abcscribe.core.device import resolve_device
    from abcscribe.core.modeldir import plan_run
    from abcscribe.core.models import load_model
    from abcscribe.core.progress import progress

    warn = warn or (lambda m: warnings.warn(m, stacklevel=2))
    cfg.check()
    dev = resolve_device(device)
    records = read_prompts(data, split, warn)
    eval_records = read_prompts(eval_data, None, warn) if eval_data else None
    accel_kw: dict[str, Any] = {"cpu": dev == "cpu"}
    if report_to != "none":
        accel_kw.update(log_with=report_to, project_dir=str(output_dir))
    accelerator = Accelerator(**accel_kw)
    if accelerator.num_processes > 1 and dev.startswith("cuda"):
        dev = str(accelerator.device)  # each process its own GPU
    # every process makes the same decision; the main one alone trims the log, removes stale
    # checkpoints and warns
    main = accelerator.is_main_process
    plan = plan_run(Path(output_dir), "ppo", resume=resume, overwrite=overwrite,
                    state_file=STATE_NAME, warn=warn if main else (lambda m: None),
                    log_file=LOG_NAME, act=main,
                    finished=lambda run: run.get("steps", -1) >= cfg.max_steps)
    accelerator.wait_for_everyone()
    if plan.action == "skip":
        out = {"output_dir": str(output_dir), "skipped": True}
        return out if main else {**out, "main_process": False}
    lm = load_model(str(plan.checkpoint or model), device=dev, dtype=dtype, train=True)
    report = None
    if report_to != "none":
        accelerator.init_trackers("abcscribe-ppo", config={
            k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in asdict(cfg).items()
            if v is not None})

        def report(row, step):
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    summary = train(lm, records, output_dir, cfg, eval_records=eval_records,
                    resume_from=plan.checkpoint, warn=warn, report=report, accelerator=accelerator,
                    progress=lambda it, n: progress(it, total=n, desc="ppo"))
    accelerator.wait_for_everyone()  # the model is written when any process returns
    if report_to != "none":
        accelerator.end_training()
    out = {"output_dir": str(output_dir), "steps": summary["steps"]}
    for key in ("eval_before", "eval_after"):
        if key in summary:
            out[key] = summary[key]["reward_mean"]
    if not accelerator.is_main_process:
        out["main_process"] = False  # under accelerate launch: only rank 0 reports
    return out
