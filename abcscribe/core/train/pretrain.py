"""Pretraining abcscribe's note encoder, as a run: ``PretrainOptions`` (every option of
``abcscribe pretrain``, declared once) and ``run_pretrain`` (records read and checked, then
``core.note_encoder.pretrain_encoder``). No torch at import: the command line offers the
options without it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option


@dataclass(frozen=True)
class PretrainOptions:
    """Every option of ``abcscribe pretrain`` but the files: name, default, help and rule."""

    eval_clips: int = option(200, "Use at most this many --eval-data records.", metavar="N", min=1)
    steps: int = option(800, "Optimiser steps.", metavar="N", min=1)
    batch_size: int = option(8, "Clips per step (cut to at most 256 frames = 5.12 s).", metavar="N", min=1)
    lr: float = option(1e-2, "Peak learning rate, > 0 (one-cycle schedule).", above=0.0)
    channels: int = option(16, "Convolution channels.", metavar="N", min=1)
    layers: int = option(3, "Convolution layers (time context 3, 7, 15, ... frames).", metavar="N", min=1)
    timbre: int = option(16, "Timbre channels in the output layer.", metavar="N", min=1)
    tilt: float = option(0.15, "Spectral colour augmentation: largest random tilt and per-band gain "
                         "added to the CQT (0..1 scale = -60..+30 dB); 0: gain jitter only.",
                         metavar="X", min=0.0, max=1.0)  # fmt: skip
    family_batches: int = option(600, "Batches of 8 clips the per-note family map (each heard "
                                 "note's instrument family) is fitted on, after the network.",
                                 metavar="N", min=1)  # fmt: skip
    seed: int = option(0, "Seed of initialisation and batches.")
    overwrite: bool = option(False, "Train again when DIR already holds an encoder.")

    def check(self) -> None:
        check_options(self)


def run_pretrain(data: list[Path], output_dir: Path, opts: PretrainOptions,
                 eval_data: Path | None = None, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a note encoder on the records of ``data`` (their audio or stored CQT frames and
    the clips' ABC) into ``output_dir``; returns the figures (steps, val F1s) it reports."""
    from abcscribe.core.files import check_output_dir
    from abcscribe.core.files import warn as say

    warn = warn or say
    opts.check()
    check_output_dir(output_dir, "--output-dir")
    for path in [*data, *([eval_data] if eval_data else [])]:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    if (output_dir / "model.safetensors").is_file() and not opts.overwrite:
        raise UserError(f"{output_dir}: holds an encoder already (--overwrite to train again)")

    from abcscribe.core.note_encoder import pretrain_encoder
    from abcscribe.core.train.sft import read_records

    train = [r for path in data for r in read_records(path, warn, need_answer=False)]
    val = read_records(eval_data, warn, need_answer=False)[: opts.eval_clips] if eval_data else None
    return pretrain_encoder(train, output_dir, val=val, steps=opts.steps,
                            batch_size=opts.batch_size, lr=opts.lr, channels=opts.channels,
                            layers=opts.layers, timbre=opts.timbre, seed=opts.seed,
                            tilt=opts.tilt, family_batches=opts.family_batches)  # fmt: skip
