"""abcscribe mkqa: question/answer JSONL from recordings paired with scores.

The options are ``MkqaOptions``' fields and the batch is ``make_dataset``, both in
``core.mkqa``; the clips and questions are ``core.qa``'s."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import exit_with, options_of
from abcscribe.core.mkqa import MkqaOptions


def _main(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", help="Folders of recordings and MIDI/ABC sharing stems, dataset roots (URMP, Slakh2100, MAESTRO), a MAESTRO CSV, or a manifest JSONL."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="FILE.jsonl", help="Write every record to FILE.jsonl (default: stdout)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", metavar="DIR", help="Write one JSONL per split (DIR/train.jsonl, DIR/val.jsonl, ...) and error records to DIR/errors.jsonl."),
    opts: MkqaOptions = None,
) -> None:
    """Make question/answer JSONL from recordings paired with scores: bar-aligned clips of at
    most --max-seconds, one record per clip and task, split by piece."""
    from abcscribe.core.mkqa import make_dataset

    exit_with(make_dataset(inputs, output, out_dir, opts, out=sys.stdout))


main = options_of(MkqaOptions, _main)
