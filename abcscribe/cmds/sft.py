"""abcscribe sft: supervised fine-tuning of an audio language model on mkqa's Q&A records.

The training itself is ``abcscribe.core.train.sft`` (trl's SFTTrainer); this module reads the
options and hands over."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import check_tracker, emit, warn
from abcscribe.core.errors import UserError


def main(
    data: Path = typer.Option(..., "--data", metavar="TRAIN.jsonl", help="Q&A JSONL from mkqa (records with messages and audio or embedding)."),
    model: str = typer.Option("tiny", "--model", help="'tiny' (built from scratch for the data), an audio LLM dir/hub id (e.g. Qwen/Qwen2-Audio-7B-Instruct), a causal LM dir/hub id (wrapped in a composed model), or an sft/ppo output dir."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", metavar="DIR", help="Where the trained model, log.jsonl and checkpoints go."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", metavar="EVAL.jsonl", help="Held-out Q&A JSONL: eval loss logged at each evaluation and at the end."),
    split: Optional[str] = typer.Option(None, "--split", help="Train only on records of this split (e.g. train); default: every record of --data."),
    full: Optional[bool] = typer.Option(None, "--full/--lora", help="Full fine-tuning, or LoRA adapters (default: LoRA for pretrained models, full for tiny)."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", help="LoRA alpha (scale = alpha / r)."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="Dropout on the LoRA path."),
    train_encoder: bool = typer.Option(False, "--train-encoder", help="Also train the audio encoder of an audio LLM (frozen by default; the projection always trains)."),
    encoder: str = typer.Option("cqt", "--encoder", help="Encoder of a new composed model (cqt, mel, crepe, crepe-tiny, notes:DIR from pretrain, hf:DIR), when --model is tiny or a causal LM; precomputed 'embedding' files in the records are used when present."),
    projector: str = typer.Option("mlp", "--projector", help="Projection of a new composed model: mlp (2 layers) or linear."),
    stack: Optional[int] = typer.Option(None, "--stack", help="Adjacent encoder frames stacked into one audio token of a new composed model (default: 4 for tiny, 2 otherwise)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: 1e-3 full tiny, 2e-4 LoRA, 2e-5 full fine-tuning of a pretrained model)."),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the training records (ignored with --max-steps)."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many optimiser steps (-1: use --epochs; 0: save the model untrained)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Records per device per step."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Batches accumulated per optimiser step."),
    warmup_ratio: float = typer.Option(0.03, "--warmup-ratio", help="Fraction of steps of linear warm-up (cosine decay after)."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 mixed precision."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute activations in the backward pass (less memory, slower)."),
    save_steps: int = typer.Option(0, "--save-steps", help="Save a checkpoint-N folder every N steps (0: only the final model)."),
    eval_steps: int = typer.Option(0, "--eval-steps", help="Evaluate every N steps (0: with each checkpoint, else once per epoch)."),
    logging_steps: int = typer.Option(10, "--logging-steps", help="Log the training loss every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --output-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train again even when --output-dir holds a finished model."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and data order."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Load a pretrained model in this dtype: float32, bfloat16, float16 (default: its own)."),
    report_to: str = typer.Option("none", "--report-to", help="Also log to: none, tensorboard or wandb (DIR/log.jsonl is always written)."),
) -> None:
    """Fine-tune an audio language model to answer the Q&A records (transcriptions in ABC,
    tempo, metre, key, instruments), with trl's SFTTrainer; loss on the answers only.

    DIR then loads in 'transcribe' and 'ppo' with nothing else. Prints one JSON record on
    stdout when done (steps, losses, seconds); the loss curve is DIR/log.jsonl."""
    from abcscribe.core.files import check_output_dir
    from abcscribe.core.train.sft import SFTOptions  # no torch: options are checked first

    opts = SFTOptions(
        model=model, lora=None if full is None else not full, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, train_encoder=train_encoder, lr=lr, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
        bf16=bf16, gradient_checkpointing=gradient_checkpointing, save_steps=save_steps,
        eval_steps=eval_steps, logging_steps=logging_steps, resume=resume, overwrite=overwrite,
        seed=seed, split=split, report_to=report_to, encoder=encoder, projector=projector,
        stack=stack, dtype=dtype,
    )  # fmt: skip
    opts.check()
    check_output_dir(output_dir, "--output-dir")
    for path, flag in ((data, "--data"), (eval_data, "--eval-data")):
        if path is not None and not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    if report_to != "none":
        check_tracker(report_to)

    from transformers.utils import logging as hf_logging

    from abcscribe.core.train.sft import run_sft

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    summary = run_sft(data, output_dir, opts, eval_path=eval_data, warn=warn)
    if summary.pop("main_process", True):
        emit({"output_dir": str(output_dir), **summary})
