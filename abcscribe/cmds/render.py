"""abcscribe render: MIDI or ABC to audio (FluidSynth with a GM soundfont, or the built-in synth)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import Batch, emit, progress
from abcscribe.core.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def main(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT...",
        help="MIDI (.mid) or ABC (.abc) files, folders of them (walked recursively), or - for "
        "one file on stdin.",
    ),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", metavar="OUT.wav|DIR",
        help="Audio file for a single input, or a folder that mirrors the inputs' sub-folders "
        "(default: beside each input, same stem).",
    ),
    engine: str = typer.Option(
        "auto", "--engine",
        help="auto (fluidsynth when it and a soundfont are installed, else builtin), "
        "fluidsynth, or builtin (numpy synthesiser, timbre per GM family).",
    ),
    sample_rate: int = typer.Option(22050, "--sample-rate", help="Sample rate in Hz."),
    soundfont: Optional[str] = typer.Option(
        None, "--soundfont", metavar="SF2",
        help="General MIDI soundfont for fluidsynth (default: TimGM6mb, FluidR3_GM or "
        "default-GM in /usr/share/sounds/sf2).",
    ),
    audio_format: str = typer.Option(
        "wav", "--format", help="Audio format when writing into a folder: wav, flac or ogg."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace outputs that already exist (default: skip them)."
    ),
    max_seconds: float = typer.Option(
        3600.0, "--max-seconds", metavar="S", min=0.0,
        help="Refuse a piece that would render longer than S seconds (default 3600: an hour; "
        "a corrupt file can ask for days).",
    ),
) -> None:
    """Render MIDI or ABC to audio, one file per input, and print one JSONL record per input
    (input, audio, duration, sample_rate, engine) on stdout."""
    from abcscribe.core import audio
    from abcscribe.core.files import (ABC_EXTS, MIDI_EXTS, check_output_dir, check_output_file,
                                      check_unique_outputs, gather_inputs, output_done)

    if engine not in audio.ENGINES:
        raise UserError(f"--engine must be one of {', '.join(audio.ENGINES)}, got {engine!r}")
    if audio_format not in ("wav", "flac", "ogg"):
        raise UserError(f"--format must be wav, flac or ogg, got {audio_format!r}")
    audio.check_sample_rate(sample_rate)
    if soundfont:
        audio.find_soundfont(soundfont)  # a missing or garbage --soundfont, named
    if engine == "fluidsynth" and not audio.fluidsynth_available(soundfont):
        raise UserError("--engine fluidsynth: fluidsynth or a GM soundfont is not installed")
    used = "fluidsynth" if engine == "auto" and audio.fluidsynth_available(soundfont) else engine
    used = "builtin" if used == "auto" else used

    items = gather_inputs(inputs, MIDI_EXTS + ABC_EXTS, "MIDI or ABC files", jsonl=False,
                          stdin_kind="file")
    single_file = output is not None and Path(output).suffix.lower() in AUDIO_SUFFIXES
    if single_file and len(items) > 1:
        raise UserError(f"-o {output}: one audio file for {len(items)} inputs; give a folder")
    if output is None and any(it.path is None for it in items):
        raise UserError("reading from stdin needs -o OUT.wav")
    if single_file:
        check_output_file(output, "-o")
    elif output is not None:
        check_output_dir(output, "-o")
    outs = [Path(output) if single_file
            else Path(output) / item.rel.with_suffix("." + audio_format) if output is not None
            else item.path.with_suffix("." + audio_format) for item in items]  # fmt: skip
    check_unique_outputs((it.name, out) for it, out in zip(items, outs) if not it.error)

    batch = Batch()
    for item, out in progress(zip(items, outs), total=len(items), desc="render"):
        name = item.name if item.path is not None else "<stdin>"
        record = {"input": name, "audio": str(out)}
        with batch.guard(record, name):
            item.check()
            if not overwrite and output_done(out):
                record["skipped"] = True
            else:
                data = sys.stdin.buffer.read() if item.path is None else None
                piece = audio.read_score(item.path, data)
                if piece.note_count == 0:
                    raise UserError(f"{name}: no notes to render")
                samples = audio.render(piece, sample_rate, used, soundfont,
                                       max_seconds=max_seconds or None)
                audio.write_audio(out, samples, sample_rate)
                record.update(duration=round(samples.size / sample_rate, 6),
                              sample_rate=sample_rate, engine=used)  # fmt: skip
        emit(record)
    batch.finish()
