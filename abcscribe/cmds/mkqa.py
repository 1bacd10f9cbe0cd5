"""abcscribe mkqa: question/answer JSONL from recordings paired with scores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import Batch, emit, progress, warn
from abcscribe.core.errors import UserError


def main(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT",
        help="Folders of recordings and MIDI/ABC sharing stems, dataset roots (URMP, Slakh2100, "
        "MAESTRO), a MAESTRO CSV, or a manifest JSONL.",
    ),
    layout: str = typer.Option(
        "auto", "--layout", metavar="NAME",
        help="How INPUT pairs recordings with scores: auto, pairs, urmp, slakh, maestro, manifest.",
    ),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", metavar="FILE.jsonl",
        help="Write every record to FILE.jsonl (default: stdout).",
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out-dir", metavar="DIR",
        help="Write one JSONL per split (DIR/train.jsonl, DIR/val.jsonl, ...) and error records "
        "to DIR/errors.jsonl.",
    ),
    tasks: str = typer.Option(
        "transcribe,tempo,metre,key,instruments,voices", "--tasks", metavar="LIST",
        help="Comma-separated tasks, one record per clip and task.",
    ),
    max_seconds: float = typer.Option(30.0, "--max-seconds", metavar="S", help="Longest clip, in seconds."),
    min_bars: int = typer.Option(1, "--min-bars", metavar="N", help="Fewest bars in a clip."),
    max_bars: Optional[int] = typer.Option(
        None, "--max-bars", metavar="N", help="Most bars in a clip (default: as many as fit --max-seconds)."
    ),
    hop_bars: Optional[int] = typer.Option(
        None, "--hop-bars", metavar="N",
        help="Bars from one clip's start to the next (default: the clip's length, no overlap).",
    ),
    abc_layout: str = typer.Option(
        "voices", "--abc-layout", metavar="voices|interleaved",
        help="ABC voice layout of the answers, as midi2abc --layout: voices or interleaved.",
    ),
    grid: int = typer.Option(
        16, "--grid", metavar="N", help="Quantize MIDI to this many notes per whole note (0: keep raw timing)."
    ),
    split: Optional[str] = typer.Option(
        None, "--split", metavar="NAME=RATIO,...",
        help="Split names and ratios; a piece's split follows from a hash of its id. Default: "
        "a dataset's own split (Slakh2100's folders, MAESTRO's split column), else "
        "train=0.8,val=0.1,test=0.1 by hash; given, it overrides the datasets' own.",
    ),
    slakh_audio: str = typer.Option(
        "mix", "--slakh-audio", metavar="mix|stems|both",
        help="Slakh2100: clips of each track's mix, of each rendered stem (its own audio and "
        "notes), or both.",
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed for choosing question phrasings."),
    render: bool = typer.Option(
        False, "--render", help="Render scores that have no recording (into --audio-dir)."
    ),
    audio_dir: Optional[Path] = typer.Option(
        None, "--audio-dir", metavar="DIR",
        help="Where --render writes audio (default: 'audio' beside the output).",
    ),
    sample_rate: int = typer.Option(22050, "--sample-rate", metavar="HZ", help="Sample rate of rendered audio."),
    engine: str = typer.Option(
        "auto", "--engine", metavar="NAME",
        help="Renderer for --render: fluidsynth, builtin, or auto (fluidsynth when installed).",
    ),
    soundfont: Optional[str] = typer.Option(
        None, "--soundfont", metavar="FILE", help="General MIDI soundfont for --render (default: a system one)."
    ),
    absolute_paths: bool = typer.Option(
        False, "--absolute-paths",
        help="Write absolute audio paths (default: relative to the output file's folder; "
        "absolute on stdout).",
    ),
    jobs: int = typer.Option(
        0, "--jobs", "-j", metavar="N",
        help="Pieces worked on at once (rendering overlaps); 0: one per CPU core.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs and rendered audio."
    ),
) -> None:
    """Make question/answer JSONL from recordings paired with scores: bar-aligned clips of at
    most --max-seconds, one record per clip and task, split by piece."""
    from abcscribe.core import qa
    from abcscribe.core.files import check_output_dir, check_output_file, nothing_to_do
    from abcscribe.core.layouts import sources

    if output is not None and out_dir is not None:
        raise UserError("give -o FILE or --out-dir DIR, not both")
    if abc_layout not in ("voices", "interleaved"):
        raise UserError(f"--abc-layout: expected voices or interleaved, got {abc_layout!r}")
    if grid < 0:
        raise UserError(f"--grid must be 0 (no quantization) or positive, got {grid}")
    if engine not in ("auto", "fluidsynth", "builtin"):
        raise UserError(f"--engine: expected auto, fluidsynth or builtin, got {engine!r}")
    ratios = qa.parse_split(split or "train=0.8,val=0.1,test=0.1")
    to_stdout = out_dir is None and output in (None, "-")
    out_file = None if to_stdout or output is None else Path(output)
    if out_file is not None:
        check_output_file(out_file, "-o")
    if out_dir is not None:
        check_output_dir(out_dir, "--out-dir")
    if audio_dir is not None:
        check_output_dir(audio_dir, "--audio-dir")
    base = out_dir if out_dir is not None else (out_file.parent if out_file else None)
    if render and audio_dir is None and base is not None:
        audio_dir = base / "audio"
    if render and audio_dir is None:
        raise UserError("--render with records on stdout needs --audio-dir")
    if out_file is not None and out_file.exists() and not overwrite:
        warn(f"{out_file} exists; skipping (use --overwrite)")
        return
    split_files = {name: out_dir / f"{name}.jsonl" for name, r in ratios.items() if r > 0} if out_dir else {}
    if split_files and all(p.exists() for p in split_files.values()) and not overwrite:
        warn(f"{out_dir} already holds {', '.join(p.name for p in split_files.values())}; "
             "skipping (use --overwrite)")
        return

    opts = qa.QAOptions(
        max_seconds=max_seconds, min_bars=min_bars, hop_bars=hop_bars, max_bars=max_bars,
        tasks=tuple(qa.parse_tasks(tasks)), seed=seed, abc_layout=abc_layout,
        grid=grid or None, splits=tuple(ratios.items()), official_splits=split is None,
        render=render, audio_dir=audio_dir,
        sample_rate=sample_rate, engine=engine, soundfont=soundfont, overwrite=overwrite,
        audio_base=None if (absolute_paths or to_stdout) else base,
    )
    qa.check_clip_options(max_seconds, min_bars, hop_bars, max_bars)

    found = [s for path in inputs for s in sources(path, layout, slakh_audio)]
    if not found:
        raise nothing_to_do(f"no recordings or scores in {', '.join(inputs)} (--layout {layout})")
    seen: dict[str, object] = {}
    for src in found:
        if src.id in seen and not src.error:
            src.error = f"{src.id}: a second piece with this id ({src.score or src.audio})"
        seen.setdefault(src.id, src)
    batch = Batch()
    kept: list[dict] = []
    errors: list[dict] = []
    results = qa.map_sources(found, opts, jobs=jobs if jobs > 0 else (os.cpu_count() or 1))
    for src, outcome in progress(results, total=len(found), desc="mkqa"):
        err = {"id": src.id, "piece": src.id,
               "audio": str(src.audio) if src.audio else None,
               "score": str(src.score) if src.score else None}
        with batch.guard(err):
            if isinstance(outcome, BaseException):
                raise outcome
            recs, remarks = outcome
            for r in remarks:
                warn(r)
            if to_stdout:
                for r in recs:
                    emit(r)
            else:
                kept.extend(recs)
        if "error" in err:
            if to_stdout:
                emit(err)
            else:
                errors.append(err)

    if out_file is not None:
        qa.write_jsonl(out_file, kept + errors)
    elif out_dir is not None:
        by_split = qa.records_by_split(kept)
        for name, path in split_files.items():
            qa.write_jsonl(path, by_split.get(name, []))
        err_path = out_dir / "errors.jsonl"
        if errors:
            qa.write_jsonl(err_path, errors)
        elif err_path.exists():
            err_path.unlink()  # a stale list from an earlier run would mislead
    batch.finish()
