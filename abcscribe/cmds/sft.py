"""abcscribe sft: supervised fine-tuning of an audio language model on mkqa's Q&A records.

The options are ``SFTOptions``' fields (declared once, in ``core.train.sft``); the training is
``core.train.sft.run_sft`` (trl's SFTTrainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from abcscribe.cmds._base import emit, options_of, warn
from abcscribe.core.train.sft import SFTOptions


def _main(
    data: Path = typer.Option(..., "--data", metavar="TRAIN.jsonl", help="Q&A JSONL from mkqa (records with messages and audio or embedding)."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", metavar="DIR", help="Where the trained model, log.jsonl and checkpoints go."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", metavar="EVAL.jsonl", help="Held-out Q&A JSONL: eval loss logged at each evaluation and at the end."),
    opts: SFTOptions = None,
) -> None:
    """Fine-tune an audio language model to answer the Q&A records (transcriptions in ABC,
    tempo, metre, key, instruments), with trl's SFTTrainer; loss on the answers only.

    DIR then loads in 'transcribe' and 'ppo' with nothing else. Prints one JSON record on
    stdout when done (steps, losses, seconds); the loss curve is DIR/log.jsonl."""
    from abcscribe.core.train.sft import run_sft

    summary = run_sft(data, output_dir, opts, eval_path=eval_data, warn=warn)
    if summary.pop("main_process", True):
        emit({"output_dir": str(output_dir), **summary})


main = options_of(SFTOptions, _main)
