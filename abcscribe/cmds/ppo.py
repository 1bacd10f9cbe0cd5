"""abcscribe ppo: reinforcement learning of an sft model against the music reward of `score`.

The options are ``PPOConfig``'s fields (declared once, in ``core.train.config``); the run is
``core.train.ppo.run_ppo``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import check_tracker, device_option, emit, options_of, warn
from abcscribe.core.errors import UserError
from abcscribe.core.train.config import PPOConfig


def _main(
    data: Path = typer.Option(..., "--data", help="Q&A JSONL from mkqa; its 'transcribe' records are the prompts, their 'abc' the reference."),
    model: str = typer.Option(..., "--model", help="The model to train: an sft (or ppo) output directory, or a transformers audio LLM dir/hub id."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Where the trained model, log.jsonl and checkpoints go."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out Q&A JSONL: mean reward of greedy transcriptions before and after training."),
    split: Optional[str] = typer.Option(None, "--split", help="Use only records of this split (e.g. train); default: every record."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Reward weights as in score, e.g. 'pitch=0.5,metre=0.15,tempo=0.15,instrument=0.2'."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in --output-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train again even when --output-dir holds a finished run."),
    device: str = device_option(),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Model dtype: float32, bfloat16, float16 (default: the model's)."),
    report_to: str = typer.Option("none", "--report-to", help="Also log to: none, tensorboard or wandb (log.jsonl is always written)."),
    opts: PPOConfig = None,
) -> None:
    """Train a model with PPO against the music reward (the reward of 'abcscribe score').

    Prints one JSON record on stdout when done: output dir, steps, and the greedy eval reward
    before and after (with --eval-data)."""
    from abcscribe.core.device import check_device
    from abcscribe.core.files import check_output_dir
    from abcscribe.core.train.sft import REPORT_TO

    opts.check()
    if report_to not in REPORT_TO:
        raise UserError(f"--report-to must be none, tensorboard or wandb, got {report_to!r}")
    check_device(device)
    check_output_dir(output_dir, "--output-dir")
    for path, flag in ((data, "--data"), (eval_data, "--eval-data")):
        if path is not None and not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    if report_to != "none":
        check_tracker(report_to)
    if weights:
        from abcscribe.core.reward import parse_weights

        opts = replace(opts, weights=parse_weights(weights))

    from abcscribe.core.train.ppo import run_ppo

    summary = run_ppo(data, model, output_dir, opts, eval_data=eval_data, split=split,
                      resume=resume, overwrite=overwrite, device=device, dtype=dtype,
                      report_to=report_to, warn=warn)
    if summary.pop("main_process", True):
        emit(summary)


main = options_of(PPOConfig, _main)
