"""abcscribe ppo: reinforcement learning of an sft model against the music reward of `score`.

The loop itself is ``abcscribe.core.train.ppo``; this module reads options and data, loads the
model, and hands over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import check_top_p, check_tracker, device_option, emit, progress, warn
from abcscribe.core.errors import UserError


def main(
    data: Path = typer.Option(..., "--data", help="Q&A JSONL from mkqa; its 'transcribe' records are the prompts, their 'abc' the reference."),
    model: str = typer.Option(..., "--model", help="The model to train: an sft (or ppo) output directory, or a transformers audio LLM dir/hub id."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Where the trained model, log.jsonl and checkpoints go."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out Q&A JSONL: mean reward of greedy transcriptions before and after training."),
    split: Optional[str] = typer.Option(None, "--split", help="Use only records of this split (e.g. train); default: every record."),
    batch_size: int = typer.Option(32, "--batch-size", help="Prompts per step."),
    samples_per_prompt: int = typer.Option(8, "--samples-per-prompt", help="Completions sampled per prompt."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature of rollouts (> 0)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling of rollouts, in (0, 1]."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest completion sampled."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Reward weights as in score, e.g. 'pitch=0.5,metre=0.15,tempo=0.15,instrument=0.2'."),
    format_bonus: float = typer.Option(0.0, "--format-bonus", help="Added to the reward of a completion that parses as ABC without warnings."),
    kl_coef: float = typer.Option(0.1, "--kl-coef", help="Weight of the per-token KL penalty against the reference policy."),
    kl_target: Optional[float] = typer.Option(None, "--kl-target", help="Adapt --kl-coef so the KL per sample approaches this value."),
    advantage: str = typer.Option("group", "--advantage", help="'group': samples of a prompt normalised against each other (GRPO, no value model); 'gae': a value head and GAE (PPO)."),
    group_scale: str = typer.Option("batch", "--group-scale", help="Group advantages are divided by the spread of the whole batch ('batch') or of each prompt's samples ('group', as in GRPO)."),
    gamma: float = typer.Option(1.0, "--gamma", help="Discount (gae)."),
    lam: float = typer.Option(0.95, "--lam", help="GAE lambda (gae)."),
    clip: float = typer.Option(0.2, "--clip", help="PPO clip range of the probability ratio."),
    ppo_epochs: int = typer.Option(2, "--ppo-epochs", help="Passes over each batch of rollouts."),
    mini_batch_size: int = typer.Option(64, "--mini-batch-size", help="Samples per optimiser step (whole prompts)."),
    entropy_coef: float = typer.Option(0.0, "--entropy-coef", help="Weight of the entropy bonus."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping norm."),
    lr: float = typer.Option(3e-4, "--lr", help="Learning rate (AdamW)."),
    max_steps: int = typer.Option(50, "--max-steps", help="Training steps (one batch of rollouts each)."),
    save_steps: int = typer.Option(0, "--save-steps", help="Save a checkpoint-N folder every N steps (0: only at the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --output-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train again even when --output-dir holds a finished run."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order and sampling."),
    device: str = device_option(),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Model dtype: float32, bfloat16, float16 (default: the model's)."),
    report_to: str = typer.Option("none", "--report-to", help="Also log to: none, tensorboard or wandb (log.jsonl is always written)."),
) -> None:
    """Train a model with PPO against the music reward (the reward of 'abcscribe score').

    Prints one JSON record on stdout when done: output dir, steps, and the greedy eval reward
    before and after (with --eval-data)."""
    from abcscribe.core.device import resolve_device
    from abcscribe.core.files import check_output_dir
    from abcscribe.core.train.sft import REPORT_TO

    check_top_p(top_p)
    if report_to not in REPORT_TO:
        raise UserError(f"--report-to must be none, tensorboard or wandb, got {report_to!r}")
    check_output_dir(output_dir, "--output-dir")
    for path, flag in ((data, "--data"), (eval_data, "--eval-data")):
        if path is not None and not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    if report_to != "none":
        check_tracker(report_to)
    dev = resolve_device(device)

    import torch  # noqa: F401  (heavy imports stay inside main)
    from accelerate import Accelerator

    from abcscribe.core.modeldir import plan_run
    from abcscribe.core.models import load_model
    from abcscribe.core.train import ppo

    parsed_weights = None
    if weights:
        from abcscribe.core.reward import parse_weights

        parsed_weights = parse_weights(weights)
    cfg = ppo.PPOConfig(
        batch_size=batch_size, samples_per_prompt=samples_per_prompt, temperature=temperature,
        top_p=top_p, max_new_tokens=max_new_tokens, weights=parsed_weights,
        format_bonus=format_bonus, kl_coef=kl_coef, kl_target=kl_target, advantage=advantage, group_scale=group_scale,
        gamma=gamma, lam=lam, clip=clip, ppo_epochs=ppo_epochs, mini_batch_size=mini_batch_size,
        entropy_coef=entropy_coef, max_grad_norm=max_grad_norm, lr=lr, max_steps=max_steps,
        save_steps=save_steps, seed=seed,
    )
    cfg.check()

    records = _transcribe_records(data, split)
    eval_records = _transcribe_records(eval_data, None) if eval_data else None

    plan = plan_run(output_dir, "ppo", resume=resume, overwrite=overwrite,
                    state_file=ppo.STATE_NAME, warn=warn, log_file=ppo.LOG_NAME,
                    finished=lambda run: run.get("steps", -1) >= max_steps)
    if plan.action == "skip":
        emit({"output_dir": str(output_dir), "skipped": True})
        return

    accel_kw = {"cpu": dev == "cpu"}
    if report_to != "none":
        accel_kw.update(log_with=report_to, project_dir=str(output_dir))
    accelerator = Accelerator(**accel_kw)
    lm = load_model(str(plan.checkpoint or model), device=dev, dtype=dtype, train=True)

    report = None
    if report_to != "none":
        accelerator.init_trackers("abcscribe-ppo", config=_flat_config(cfg))

        def report(row, step):
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    summary = ppo.train(
        lm, records, output_dir, cfg, eval_records=eval_records, resume_from=plan.checkpoint,
        progress=lambda it, n: progress(it, total=n, desc="ppo"), warn=warn, report=report,
        accelerator=accelerator,
    )
    if report_to != "none":
        accelerator.end_training()
    out = {"output_dir": str(output_dir), "steps": summary["steps"]}
    for key in ("eval_before", "eval_after"):
        if key in summary:
            out[key] = summary[key]["reward_mean"]
    if accelerator.is_main_process:
        emit(out)


def _transcribe_records(path: Path, split: str | None) -> list[dict]:
    """The transcription prompts of an mkqa JSONL (records with task 'transcribe' and 'abc');
    malformed lines and records are reported and skipped, as sft does."""
    from abcscribe.core.train.sft import read_records

    recs = [r for r in read_records(path, warn, need_answer=False, split=split)
            if r.get("task", "transcribe") == "transcribe" and isinstance(r.get("abc"), str)]
    if not recs:
        raise UserError(f"{path}: no 'transcribe' records with an 'abc' reference and their audio"
                        + (f" in split {split!r}" if split else ""))
    return recs


def _flat_config(cfg) -> dict:
    from dataclasses import asdict

    return {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in asdict(cfg).items()
            if v is not None}
