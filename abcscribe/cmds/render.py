"""abcscribe render: MIDI or ABC to audio (FluidSynth with a GM soundfont, or the built-in synth).

The options are ``RenderOptions``' fields and the batch is ``render_files``, both in
``core.render``; the sound is ``core.audio.render``."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from abcscribe.cmds._base import exit_with, options_of
from abcscribe.core.render import RenderOptions


def _main(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="MIDI (.mid) or ABC (.abc) files, folders of them (walked recursively), or - for one file on stdin."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="OUT.wav|DIR", help="Audio file for a single input, or a folder that mirrors the inputs' sub-folders (default: beside each input, same stem)."),
    opts: RenderOptions = None,
) -> None:
    """Render MIDI or ABC to audio, one file per input, and print one JSONL record per input
    (input, audio, duration, sample_rate, engine) on stdout."""
    from abcscribe.core.render import render_files

    exit_with(render_files(inputs, output, opts, out=sys.stdout))


main = options_of(RenderOptions, _main)
