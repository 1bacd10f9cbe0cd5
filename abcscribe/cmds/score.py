"""abcscribe score: the music-aware reward of predicted ABC against reference ABC, one JSONL record
per pair.

The options are ``ScoreOptions``' fields and the batch is ``score_pairs``, both in
``core.scoring``; the metrics are ``core.reward``'s."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from abcscribe.cmds._base import exit_with, options_of
from abcscribe.core.scoring import ScoreOptions


def _main(
    ref: Optional[str] = typer.Option(None, "--ref", metavar="FILE|DIR", help="Reference ABC: a file, or a folder of .abc files (walked recursively) paired with --pred by relative path. Without --ref/--pred, JSONL pairs are read from stdin."),
    pred: Optional[str] = typer.Option(None, "--pred", metavar="FILE|DIR", help="Predicted ABC: a file, or a folder mirroring --ref's layout. Prose and ``` fences around the ABC are allowed."),
    opts: ScoreOptions = None,
) -> None:
    """Score predicted ABC transcriptions against references with the seed's reward (pitch,
    metre, tempo, instrument) plus rhythm and note-level F1, one JSONL record per pair on stdout.

    Pairs come from --ref/--pred (two files, or two folders paired by relative path) or, without
    them, from JSONL on stdin: each record has "ref"/"pred" (ABC text) or "ref_path"/"pred_path";
    its other fields are passed through."""
    from abcscribe.core.scoring import score_pairs

    exit_with(score_pairs(ref, pred, opts, out=sys.stdout))


main = options_of(ScoreOptions, _main)
