"""abcscribe pretrain: train abcscribe's own music encoder with frame-level note targets.

The options are ``PretrainOptions``' fields and the run is ``run_pretrain``, both in
``core.train.pretrain``; the network and its training are ``core.note_encoder``'s."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import emit, options_of
from abcscribe.core.train.pretrain import PretrainOptions


def _main(
    data: List[Path] = typer.Option(..., "--data", metavar="TRAIN.jsonl", help="Q&A JSONL from mkqa (records with 'audio' and the clip's 'abc'; CQT frames from 'embed --encoder cqt --pool-ms 0' are used when present); repeat for several."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", metavar="DIR", help="Where the encoder goes (config.json, model.safetensors, pretrain.json)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", metavar="VAL.jsonl", help="Held-out records: onset F1, frame F1 and family accuracy written to DIR/pretrain.json."),
    opts: PretrainOptions = None,
) -> None:
    """Pretrain a note encoder: a small pitch-equivariant convolutional network over constant-Q
    frames, trained to say which pitches start and sound in each 20 ms frame and which
    instrument families play, from the clips' own scores. Use it as '--encoder notes:DIR' in
    embed and sft. Prints one JSON record on stdout when done (steps, val figures)."""
    from abcscribe.core.train.pretrain import run_pretrain

    figures = run_pretrain(data, output_dir, opts, eval_data=eval_data)
    emit({"output_dir": str(output_dir), **figures})


main = options_of(PretrainOptions, _main)
