"""MIDI or ABC files to audio, as a batch: ``RenderOptions`` (every option of ``abcscribe
render``, declared once) and ``render_files`` (outputs beside the inputs, in a folder or one
file; existing ones skipped; one error record per bad input). The sound is ``core.audio.render``."""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option

ENGINES = ("auto", "fluidsynth", "builtin")  # core.audio.ENGINES (a test keeps them equal)
AUDIO_FORMATS = ("wav", "flac", "ogg")


@dataclass(frozen=True)
class RenderOptions:
    """Every option of ``abcscribe render``: name, default, help and rule, declared once."""

    engine: str = option("auto", "auto (fluidsynth when it and a soundfont are installed, else builtin), fluidsynth, or builtin (numpy synthesiser, timbre per GM family).", choices=ENGINES)
    sample_rate: int = option(22050, "Sample rate in Hz (4000-192000).", metavar="HZ", min=4000, max=192000)
    soundfont: str | None = option(None, "General MIDI soundfont for fluidsynth (default: TimGM6mb, FluidR3_GM or default-GM in /usr/share/sounds/sf2).", metavar="SF2")
    format: str = option("wav", "Audio format when writing into a folder or beside the inputs.", choices=AUDIO_FORMATS)
    overwrite: bool = option(False, "Replace outputs that already exist (default: skip them).")
    timbre_spread: float = option(0.0, "builtin: vary each instrument's colour (partial levels, envelope, vibrato) by up to this much (0-2; 0: the fixed timbres), drawn per file from its name: training audio that does not all sound like one synthesiser.", metavar="X", min=0.0, max=2.0)
    max_seconds: float = option(3600.0, "Refuse a piece that would render longer than S seconds (default 3600: an hour; a corrupt file can ask for days; 0: no limit).", metavar="S", min=0.0)

    def check(self) -> str:
        """UserError naming the option for a value that cannot render; before any work.
        Returns the engine that will run (auto resolved)."""
        from abcscribe.core import audio

        check_options(self)
        if self.soundfont:
            audio.find_soundfont(self.soundfont)  # a missing or garbage --soundfont, named
        if self.engine == "fluidsynth" and not audio.fluidsynth_available(self.soundfont):
            raise UserError("--engine fluidsynth: fluidsynth or a GM soundfont is not installed")
        engine = self.engine
        if engine == "auto":
            engine = "fluidsynth" if audio.fluidsynth_available(self.soundfont) else "builtin"
        if self.timbre_spread > 0 and engine != "builtin":
            raise UserError("--timbre-spread varies the built-in synthesiser: use it with --engine builtin")
        return engine


def render_files(inputs: list[str], output: str | None, opts: RenderOptions, out: TextIO) -> int:
    """Render every input to audio and write one JSONL record per input on ``out`` (input,
    audio, duration, sample_rate, engine; or error). ``output``: an audio file for a single
    input, a folder mirroring the inputs' sub-folders, or None (beside each input). Returns
    the exit status: 1 when any input failed, else 0."""
    from abcscribe.core import audio
    from abcscribe.core.files import (ABC_EXTS, MIDI_EXTS, Batch, check_output_dir,
                                      check_output_file, gather_inputs, mirrored_outputs,
                                      output_done, write_record)
    from abcscribe.core.progress import progress

    engine = opts.check()
    items = gather_inputs(inputs, MIDI_EXTS + ABC_EXTS, "MIDI or ABC files", jsonl=False,
                          stdin_kind="file")
    single_file = output is not None and Path(output).suffix.lower() in tuple("." + f for f in AUDIO_FORMATS)
    if single_file and len(items) > 1:
        raise UserError(f"-o {output}: one audio file for {len(items)} inputs; give a folder")
    if output is None and any(it.path is None for it in items):
        raise UserError("reading from stdin needs -o OUT.wav")
    if single_file:
        check_output_file(output, "-o")
    elif output is not None:
        check_output_dir(output, "-o")
    outs = ([Path(output)] if single_file
            else mirrored_outputs(items, None if output is None else Path(output), "." + opts.format))

    batch = Batch()
    for item, path in progress(zip(items, outs), total=len(items), desc="render", unit="file"):
        name = item.name if item.path is not None else "<stdin>"
        record = {"input": name, "audio": str(path)}
        with batch.guard(record, name):
            item.check()
            if not opts.overwrite and output_done(path):
                record["skipped"] = True
            else:
                data = sys.stdin.buffer.read() if item.path is None else None
                piece = audio.read_score(item.path, data)
                if piece.note_count == 0:
                    raise UserError(f"{name}: no notes to render")
                samples = audio.render(piece, opts.sample_rate, engine, opts.soundfont,
                                       max_seconds=opts.max_seconds or None,
                                       spread=opts.timbre_spread, seed=zlib.crc32(path.stem.encode()))  # fmt: skip
                audio.write_audio(path, samples, opts.sample_rate)
                record.update(duration=round(samples.size / opts.sample_rate, 6),
                              sample_rate=opts.sample_rate, engine=engine)  # fmt: skip
        write_record(out, record)
    return batch.status()
