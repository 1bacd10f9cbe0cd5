"""Q&A records from recordings paired with scores, as a batch: ``MkqaOptions`` (every option of
``abcscribe mkqa``, declared once) and ``make_dataset`` (sources found under each input, one
error record per bad input or piece, records on stdout, in one file or one file per split).
The clips and questions are ``core.qa``'s; finding the pairs is ``core.layouts``'."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option

# core.layouts.LAYOUTS and SLAKH_AUDIO, core.render.ENGINES (a test keeps them equal)
LAYOUTS = ("auto", "pairs", "urmp", "slakh", "maestro", "manifest")
SLAKH_AUDIO = ("mix", "stems", "both")
ENGINES = ("auto", "fluidsynth", "builtin")
DEFAULT_SPLIT = "train=0.8,val=0.1,test=0.1"


@dataclass(frozen=True)
class MkqaOptions:
    """Every option of ``abcscribe mkqa`` but the inputs and outputs: name, default, help and
    rule, declared once."""

    layout: str = option("auto", "How INPUT pairs recordings with scores.", choices=LAYOUTS)
    tasks: str = option("transcribe,tempo,metre,key,instruments,voices", "Comma-separated tasks, one record per clip and task.", metavar="LIST")
    max_seconds: float = option(30.0, "Longest clip, in seconds (> 0).", metavar="S", above=0.0)
    min_bars: int = option(1, "Fewest bars in a clip (at least 1).", metavar="N", min=1)
    max_bars: int | None = option(None, "Most bars in a clip, at least --min-bars (default: as many as fit --max-seconds).", metavar="N", min=1)
    hop_bars: int | None = option(None, "Bars from one clip's start to the next, at least 1 (default: the clip's length, no overlap).", metavar="N", min=1)
    abc_layout: str = option("voices", "ABC voice layout of the answers, as midi2abc --layout.", choices=("voices", "interleaved"))
    grid: int = option(16, "Quantize MIDI to this many notes per whole note (0: keep raw timing).", metavar="N", min=0)
    split: str | None = option(None, "Split names and ratios; a piece's split follows from a hash of its id. Default: a dataset's own split (Slakh2100's folders, MAESTRO's split column), else train=0.8,val=0.1,test=0.1 by hash; given, it overrides the datasets' own.", metavar="NAME=RATIO,...")
    slakh_audio: str = option("mix", "Slakh2100: clips of each track's mix, of each rendered stem (its own audio and notes), or both.", choices=SLAKH_AUDIO)
    seed: int = option(0, "Seed for choosing question phrasings.", metavar="N")
    render: bool = option(False, "Render scores that have no recording (into --audio-dir).")
    audio_dir: Path | None = option(None, "Where --render writes audio (default: 'audio' beside the output).", metavar="DIR")
    sample_rate: int = option(22050, "Sample rate of rendered audio (4000-192000).", metavar="HZ", min=4000, max=192000)
    engine: str = option("auto", "Renderer for --render: fluidsynth, builtin, or auto (fluidsynth when installed).", choices=ENGINES)
    soundfont: str | None = option(None, "General MIDI soundfont for --render (default: a system one).", metavar="FILE")
    absolute_paths: bool = option(False, "Write absolute audio paths (default: relative to the output file's folder; absolute on stdout).")
    jobs: int = option(0, "Pieces worked on at once (rendering overlaps); 0: one per CPU core.", flags=["--jobs", "-j"], metavar="N", min=0)
    overwrite: bool = option(False, "Replace existing outputs and rendered audio.")

    def check(self) -> None:
        """UserError naming the option for a value that cannot make clips; before any work."""
        from abcscribe.core import qa

        check_options(self)
        qa.check_clip_options(self.max_seconds, self.min_bars, self.hop_bars, self.max_bars)
        qa.parse_tasks(self.tasks)
        self.ratios()
        if self.soundfont:
            from abcscribe.core.audio import find_soundfont

            find_soundfont(self.soundfont)

    def ratios(self) -> dict[str, float]:
        from abcscribe.core import qa

        return qa.parse_split(self.split or DEFAULT_SPLIT)


def make_dataset(inputs: list[str], output: str | None, out_dir: Path | None, opts: MkqaOptions,
                 out: TextIO) -> int:
    """Make Q&A records from every input: on ``out`` (``output`` None or ``-``), into the file
    ``output``, or one file per split under ``out_dir`` (error records in errors.jsonl). An
    input that cannot be read (a missing path among several) or a piece that fails is an error
    record and the others go on. Returns the exit status: 1 when any failed, else 0."""
    from abcscribe.core import qa
    from abcscribe.core.files import Batch, check_output_dir, check_output_file, warn, write_record
    from abcscribe.core.progress import progress

    opts.check()
    if output is not None and out_dir is not None:
        raise UserError("give -o FILE or --out-dir DIR, not both")
    ratios = opts.ratios()
    to_stdout = out_dir is None and output in (None, "-")
    out_file = None if to_stdout or output is None else Path(output)
    if out_file is not None:
        check_output_file(out_file, "-o")
    if out_dir is not None:
        check_output_dir(out_dir, "--out-dir")
    audio_dir = opts.audio_dir
    if audio_dir is not None:
        check_output_dir(audio_dir, "--audio-dir")
    base = out_dir if out_dir is not None else (out_file.parent if out_file else None)
    if opts.render and audio_dir is None and base is not None:
        audio_dir = base / "audio"
    if opts.render and audio_dir is None:
        raise UserError("--render with records on stdout needs --audio-dir")
    if out_file is not None and out_file.exists() and not opts.overwrite:
        warn(f"{out_file} exists; skipping (use --overwrite)")
        return 0
    split_files = {name: out_dir / f"{name}.jsonl" for name, r in ratios.items() if r > 0} if out_dir else {}
    if split_files and all(p.exists() for p in split_files.values()) and not opts.overwrite:
        warn(f"{out_dir} already holds {', '.join(p.name for p in split_files.values())}; "
             "skipping (use --overwrite)")
        return 0

    clips = qa.QAOptions(
        max_seconds=opts.max_seconds, min_bars=opts.min_bars, hop_bars=opts.hop_bars,
        max_bars=opts.max_bars, tasks=tuple(qa.parse_tasks(opts.tasks)), seed=opts.seed,
        abc_layout=opts.abc_layout, grid=opts.grid or None, splits=tuple(ratios.items()),
        official_splits=opts.split is None, render=opts.render, audio_dir=audio_dir,
        sample_rate=opts.sample_rate, engine=opts.engine, soundfont=opts.soundfont,
        overwrite=opts.overwrite, audio_base=None if (opts.absolute_paths or to_stdout) else base,
    )  # fmt: skip
    found = find_sources(inputs, opts)
    batch = Batch()
    kept: list[dict] = []
    errors: list[dict] = []
    results = qa.map_sources(found, clips, jobs=opts.jobs if opts.jobs > 0 else (os.cpu_count() or 1))
    for src, outcome in progress(results, total=len(found), desc="mkqa", unit="piece"):
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
                    write_record(out, r)
            else:
                kept.extend(recs)
        if "error" in err:
            if to_stdout:
                write_record(out, err)
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
    return batch.status()


def find_sources(inputs: list[str], opts: MkqaOptions) -> list:
    """The pieces under every input, in order, ids made unique. An input that cannot be read
    is a UserError when it is the only one, else a source carrying its error (the others go
    on); nothing found at all is "nothing to do"."""
    from abcscribe.core.files import nothing_to_do
    from abcscribe.core.layouts import Source, sources

    found = []
    for path in inputs:
        try:
            found.extend(sources(path, opts.layout, opts.slakh_audio))
        except UserError as e:
            if len(inputs) == 1:
                raise
            found.append(Source(id=str(path), audio=None, score=None, error=str(e)))
    if not found:
        raise nothing_to_do(f"no recordings or scores in {', '.join(inputs)} (--layout {opts.layout})")
    seen: dict[str, object] = {}
    for src in found:
        if src.id in seen and not src.error:
            src.error = f"{src.id}: a second piece with this id ({src.score or src.audio})"
        seen.setdefault(src.id, src)
    return found
