"""abcscribe pretrain: train abcscribe's own music encoder with frame-level note targets.

The training is ``abcscribe.core.note_encoder.pretrain_encoder``; this module reads the options
and hands over."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import emit, warn
from abcscribe.core.errors import UserError


def main(
    data: List[Path] = typer.Option(..., "--data", metavar="TRAIN.jsonl", help="Q&A JSONL from mkqa (records with 'audio' and the clip's 'abc'; CQT frames from 'embed --encoder cqt --pool-ms 0' are used when present); repeat for several."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", metavar="DIR", help="Where the encoder goes (config.json, model.safetensors, pretrain.json)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", metavar="VAL.jsonl", help="Held-out records: onset F1, frame F1 and family accuracy written to DIR/pretrain.json."),
    eval_clips: int = typer.Option(200, "--eval-clips", help="Use at most this many --eval-data records."),
    steps: int = typer.Option(800, "--steps", help="Optimiser steps."),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per step (cut to at most 256 frames = 5.12 s)."),
    lr: float = typer.Option(1e-2, "--lr", help="Peak learning rate (one-cycle schedule)."),
    channels: int = typer.Option(16, "--channels", help="Convolution channels."),
    layers: int = typer.Option(3, "--layers", help="Convolution layers (time context 3, 7, 15, ... frames)."),
    timbre: int = typer.Option(16, "--timbre", help="Timbre channels in the output layer."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train again when DIR already holds an encoder."),
) -> None:
    """Pretrain a note encoder: a small pitch-equivariant convolutional network over constant-Q
    frames, trained to say which pitches start and sound in each 20 ms frame and which
    instrument families play, from the clips' own scores. Use it as '--encoder notes:DIR' in
    embed and sft. Prints one JSON record on stdout when done (steps, val figures)."""
    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--channels", channels), ("--layers", layers), ("--timbre", timbre)):
        if v < 1:
            raise UserError(f"{name} must be at least 1, got {v}")
    if not lr > 0 or lr != lr:
        raise UserError(f"--lr must be a positive number, got {lr}")
    for path in [*data, *([eval_data] if eval_data else [])]:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    if (output_dir / "model.safetensors").is_file() and not overwrite:
        raise UserError(f"{output_dir}: holds an encoder already (--overwrite to train again)")

    from abcscribe.core.note_encoder import pretrain_encoder
    from abcscribe.core.train.sft import read_records

    train = [r for path in data for r in read_records(path, warn, need_answer=False)]
    val = read_records(eval_data, warn, need_answer=False)[:eval_clips] if eval_data else None
    figures = pretrain_encoder(train, output_dir, val=val, steps=steps, batch_size=batch_size,
                               lr=lr, channels=channels, layers=layers, timbre=timbre, seed=seed)  # fmt: skip
    emit({"output_dir": str(output_dir), **figures})
