"""abcscribe transcribe: audio files, folders or mkqa JSONL to ABC (and MIDI, MusicXML)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import Batch, check_top_p, device_option, emit, progress, warn
from abcscribe.core.errors import UserError


def main(
    inputs: List[str] = typer.Argument(
        ...,
        metavar="AUDIO|DIR|JSONL...",
        help="Audio files, folders (walked recursively), mkqa JSONL files, or '-' for JSONL on stdin.",
    ),
    model: str = typer.Option(
        "baseline",
        "--model",
        "-m",
        help="An sft/ppo output directory, a transformers audio LLM directory or hub id, or "
        "'baseline' (onset and pitch tracking, no trained weights).",
    ),
    prompt: Optional[str] = typer.Option(
        None,
        "--prompt",
        help="Question asked for each window (default: a JSONL record's own question; for a "
        "pretrained audio LLM, an instruction spelling out the ABC wanted; else 'Transcribe this "
        "audio into ABC notation.').",
    ),
    window_seconds: Optional[float] = typer.Option(
        None,
        "--window-seconds",
        help="Longest window given to the model, in seconds (default: the model's clip length, "
        "30 for Whisper-based encoders and the baseline).",
    ),
    temperature: float = typer.Option(
        0.7, "--temperature", help="Sampling temperature; 0 decodes greedily."
    ),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    max_new_tokens: int = typer.Option(
        2048, "--max-new-tokens", min=1, help="Most tokens generated per window."
    ),
    num_samples: int = typer.Option(
        1,
        "--num-samples",
        min=1,
        help="Transcriptions per input; with more than one, the .abc file holds one tune per "
        "sample and the record a 'samples' list.",
    ),
    best_of: Optional[int] = typer.Option(
        None,
        "--best-of",
        min=1,
        help="Candidates per window, one kept (default: 16 for a model with a note encoder, "
        "else 1). A model with a note encoder keeps the candidate, under any key signature, "
        "whose notes (revised by ear, see --revise) agree most with the notes its encoder "
        "hears (with --temperature 0 the greedy text is one candidate, the others sampled at "
        "0.8); other models keep the one that reads cleanly and agrees most with the others.",
    ),
    revise: bool = typer.Option(
        True,
        "--revise/--no-revise",
        help="A model with a note encoder checks each candidate's notes against what the encoder "
        "hears and keeps the revision that agrees most: notes it did not hear go, notes it "
        "surely heard come in on the text's beat grid, the tempo is refitted to the heard "
        "onsets; metre, key and voices stay as written, and each voice gets the instrument most "
        "candidates give it (in an ensemble, of the family its notes are heard in, when the "
        "note encoder tells). --no-revise writes the language model's notes only.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Random seed for sampling: the same seed, the same transcription."
    ),
    output_dir: Optional[Path] = typer.Option(
        None,
        "--output-dir",
        "-o",
        help="Write <stem>.abc per input here, mirroring sub-folders (records still go to stdout).",
    ),
    midi: bool = typer.Option(False, "--midi", help="With -o, also write <stem>.mid."),
    musicxml: bool = typer.Option(
        False, "--musicxml", help="With -o, also write <stem>.musicxml (for score editors)."
    ),
    svg: bool = typer.Option(
        False, "--svg", help="With -o, also write the engraved score as <stem>.svg (needs abcm2ps)."
    ),
    batch_size: int = typer.Option(
        1, "--batch-size", min=1, help="Windows generated together (across inputs)."
    ),
    device: str = device_option(),
    dtype: Optional[str] = typer.Option(
        None, "--dtype", help="Model weights dtype: float32, bfloat16, float16 (default: the model's)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Transcribe again inputs whose outputs exist in -o DIR."
    ),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="I/N: take only inputs I, I+N, I+2N, ... (I from 0 to N-1)."
    ),
) -> None:
    """Transcribe recordings to ABC: one JSONL record per input on stdout
    {path, abc, windows, seconds, warnings, error} (+ id, ref, pred for mkqa JSONL, so the
    output pipes into 'abcscribe score'). Long audio is cut into windows at bar lines and the
    windows' ABC stitched into one tune."""
    from abcscribe.core.device import check_device
    from abcscribe.core.distributed import InputOrder, Ranks, reduce_counts
    from abcscribe.core.files import (AUDIO_EXTS, check_output_dir, check_unique_outputs,
                                      clip_span, gather_inputs, output_done)
    from abcscribe.core.models.base import GenerationOptions
    from abcscribe.core.transcribe import Input, TranscribeOptions, output_paths, read_done

    check_top_p(top_p)
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if window_seconds is not None and window_seconds <= 0:
        raise UserError(f"--window-seconds must be positive, got {window_seconds}")
    if (midi or musicxml or svg) and output_dir is None:
        raise UserError("--midi, --musicxml and --svg write files: give -o DIR")
    if svg and shutil.which("abcm2ps") is None:
        raise UserError("--svg needs abcm2ps (Debian/Ubuntu: apt-get install abcm2ps)")
    index, count = _parse_shard(shard)
    ranks = Ranks.from_env()  # under torchrun / accelerate launch: this process's share
    device = ranks.device(check_device(device))
    if output_dir is not None:
        check_output_dir(output_dir, "-o")

    items = gather_inputs(inputs, AUDIO_EXTS, "audio files or records")
    if count > 1:
        items = items[index::count]
    other_tasks = [it for it in items if it.record.get("task") not in (None, "transcribe")]
    if other_tasks:
        if ranks.is_main:
            warn(f"skipping {len(other_tasks)} JSONL records whose task is not 'transcribe'")
        items = [it for it in items if it.record.get("task") in (None, "transcribe")]
    outputs = [output_paths(output_dir, it.rel, bool(it.record), midi, musicxml, svg) for it in items]
    check_unique_outputs((it.name, paths.get("abc")) for it, paths in zip(items, outputs)
                         if not it.error)

    batch = Batch()
    out = InputOrder(ranks, emit)
    todo = []
    for i in ranks.take(items):
        it, paths = items[i], outputs[i]
        rec = _record(it)
        try:
            it.check()
            if it.path is None:
                raise UserError(f"{it.name}: record has no audio path")
            offset, duration = clip_span(it.record)
            done = paths and not overwrite and all([output_done(p) for p in paths.values()])
        except UserError as e:
            with batch.guard(rec, it.name):
                raise e
            out(i, rec)
            continue
        if done:
            rec.update(abc=read_done(paths["abc"]), skipped=True)
            if it.record:
                rec["pred"] = rec["abc"]
            batch.done += 1
            out(i, rec)
            continue
        todo.append(Input(it.path, offset, duration, it.record or None, tag=(i, rec, paths)))

    if todo:
        _transcribe(todo, out, batch, model, device, dtype, seed, TranscribeOptions(
            generation=GenerationOptions(
                temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                num_samples=num_samples, seed=seed,
            ),
            window_seconds=window_seconds,
            best_of=best_of,
            revise=revise,
            prompt=prompt,
            batch_size=batch_size,
        ))
    out.finish()
    batch.failed, batch.done = reduce_counts(ranks, batch.failed, batch.done)
    batch.finish()


def _transcribe(todo, out, batch, model, device, dtype, seed, options) -> None:
    """Transcribe the inputs still to do, handing each record to ``out`` as it is done."""
    from abcscribe.core.transcribe import load_transcriber, transcribe_items, write_outputs

    tx = load_transcriber(model, device=device, dtype=dtype)
    _seed_everything(seed)
    results = transcribe_items(tx, todo, options)
    for inp, res in progress(results, total=len(todo), desc="transcribe"):
        i, rec, paths = inp.tag
        with batch.guard(rec):
            if isinstance(res, Exception):
                raise res
            rec.update(abc=res.abc, windows=res.windows, seconds=res.seconds, warnings=res.warnings)
            if inp.record is not None:
                rec["pred"] = res.abc
            if res.samples:
                rec["samples"] = res.samples
            if paths:
                write_outputs(res, paths)
        out(i, rec)


def _record(it) -> dict:
    """The output record, before the work: the input's identity (and an mkqa record's id,
    span and reference ABC, so 'abcscribe score' can read it)."""
    rec: dict = {"path": str(it.path) if it.path is not None else None}
    src = it.record
    if src:
        for key in ("id", "piece", "split", "offset", "duration"):
            if key in src:
                rec[key] = src[key]
        if src.get("abc"):
            rec["ref"] = src["abc"]
    rec.update(abc=None, windows=0, seconds=None, warnings=[], error=None)
    return rec


def _parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        raise UserError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if not sep or count < 1 or not 0 <= index < count:
        raise UserError(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count


def _seed_everything(seed: int) -> None:
    import random
    import sys

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
