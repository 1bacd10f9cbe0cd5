"""Question/answer records from pieces paired with audio: bar-aligned clips, the clip's score
as a slice of the piece, question phrasings, answers, and splits by piece.

A record (one per clip and task) is the chat form transformers processors and trl read::

    {"id", "piece", "split", "audio", "offset", "duration", "task",
     "messages": [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": Q}]},
                  {"role": "assistant", "content": A}],
     "abc": <the clip's ABC>, "meta": {"tempo", "metre", "key", "instruments"}}

(``meta`` also has ``"timing"`` when the piece's beats were tracked from a performance.)
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from abcscribe.core import gm
from abcscribe.core.errors import UserError
from abcscribe.core.notes import Key, Meter, Note, Piece, Tempo, Voice

TASKS = ("transcribe", "tempo", "metre", "key", "instruments", "voices")

# Several phrasings per question; one is picked per record with a seeded RNG, so a model learns
# the task rather than one sentence.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "transcribe": (
        "Transcribe this audio into ABC notation.",
        "Write out the music in this clip in ABC notation.",
        "Notate this recording in ABC, one voice per instrument.",
        "What is being played here? Answer with the score in ABC notation.",
        "Listen to this clip and write its score in ABC.",
    ),
    "tempo": (
        "What is the tempo of this track?",
        "How fast is this music, in beats per minute?",
        "Estimate the tempo of this audio in BPM.",
        "At what tempo is this piece played?",
    ),
    "metre": (
        "What is the time signature of this music?",
        "What metre is this piece in?",
        "Identify the time signature of this audio.",
        "How is this music counted? Give the time signature.",
    ),
    "key": (
        "What key is this music in?",
        "Identify the key of this piece.",
        "In which key is this audio played?",
        "What are the tonic and mode of this music?",
    ),
    "instruments": (
        "What instruments are playing in this audio?",
        "Which instruments can you hear in this track?",
        "Name the instruments in this recording.",
        "List the instruments that play in this clip.",
    ),
    "voices": (
        "How many instruments are playing in this audio?",
        "How many separate parts does this music have?",
        "Count the voices you can hear in this clip.",
    ),
}


# ---- clips -------------------------------------------------------------------------------------


def bar_bounds(piece: Piece) -> list[int]:
    """Tick of every bar line from 0 through the end of the bar holding the last note
    (n bars give n + 1 bounds); [] for a piece without notes."""
    end = piece.end_tick
    if end <= 0:
        return []
    bounds = [b for b in piece.bar_starts(end) if b < end]
    last = bounds[-1]
    if last == 0 and 0 < piece.anacrusis:
        nxt = piece.anacrusis  # the piece ends inside its pickup bar
    else:
        nxt = last + piece.meter_at(last).bar_ticks
        later = [m.tick for m in piece.meters if last < m.tick < nxt]
        nxt = later[0] if later else nxt
    return bounds + [nxt]


def check_clip_options(
    max_seconds: float, min_bars: int, hop_bars: int | None, max_bars: int | None
) -> None:
    """UserError for clip options that cannot make clips."""
    if min_bars < 1:
        raise UserError(f"--min-bars must be at least 1, got {min_bars}")
    if max_bars is not None and max_bars < min_bars:
        raise UserError(f"--max-bars ({max_bars}) is below --min-bars ({min_bars})")
    if hop_bars is not None and hop_bars < 1:
        raise UserError(f"--hop-bars must be at least 1, got {hop_bars}")
    if max_seconds <= 0:
        raise UserError(f"--max-seconds must be positive, got {max_seconds}")


def clip_piece(
    piece: Piece,
    max_seconds: float = 30.0,
    min_bars: int = 1,
    hop_bars: int | None = None,
    max_bars: int | None = None,
) -> list[tuple[int, int]]:
    """Bar-aligned clips ``[(start_tick, end_tick), ...]``: each as many whole bars as fit in
    ``max_seconds`` (through the tempo map) and ``max_bars``, at least ``min_bars``; the next
    clip starts ``hop_bars`` bars later (default: where this one ends, so clips tile the piece).
    A start whose ``min_bars`` bars last longer than ``max_seconds`` gives no clip; bars left at
    the end that are fewer than ``min_bars`` give none either."""
    check_clip_options(max_seconds, min_bars, hop_bars, max_bars)
    bounds = bar_bounds(piece)
    secs = [piece.seconds(b) for b in bounds]
    n = len(bounds) - 1
    eps = 1e-6
    clips: list[tuple[int, int]] = []
    i = 0
    while i + min_bars <= n:
        j = i + min_bars
        if secs[j] - secs[i] > max_seconds + eps:
            i += hop_bars or 1
            continue
        while (
            j < n
            and (max_bars is None or j + 1 - i <= max_bars)
            and secs[j + 1] - secs[i] <= max_seconds + eps
        ):
            j += 1
        clips.append((bounds[i], bounds[j]))
        i += hop_bars or (j - i)
    return clips


def slice_piece(piece: Piece, start: int, end: int) -> Piece:
    """The part of ``piece`` sounding in ``[start, end)`` ticks, with times relative to
    ``start``: notes crossing an edge are cut at it, only voices with notes in the span are
    kept, and the tempo and meter in force at ``start`` are moved to tick 0."""
    voices = []
    for v in piece.voices:
        notes = []
        for n in v.notes:
            if n.start < end and n.end > start:
                s, e = max(n.start, start), min(n.end, end)
                notes.append(Note(n.pitch, s - start, e - s, n.velocity))
        if notes:
            voices.append(Voice(notes=notes, program=v.program, name=v.name, drum=v.drum))
    tempos = [Tempo(0, piece.tempo_at(start))] + [
        Tempo(t.tick - start, t.bpm) for t in piece.tempos if start < t.tick < end
    ]
    m0 = piece.meter_at(start)
    meters = [Meter(0, m0.numerator, m0.denominator)] + [
        Meter(m.tick - start, m.numerator, m.denominator)
        for m in piece.meters
        if start < m.tick < end
    ]
    anacrusis = piece.anacrusis if start == 0 and 0 < piece.anacrusis < end else 0
    out = Piece(voices=voices, tempos=tempos, meters=meters, key=piece.key, anacrusis=anacrusis,
                title="", tpq=piece.tpq)
    return out.sort()


# ---- facts and answers -------------------------------------------------------------------------


def instrument_names(piece: Piece) -> list[str]:
    """GM names of the instruments that play, in voice order, each once."""
    names: list[str] = []
    for v in piece.voices:
        if not v.notes:
            continue
        name = gm.program_name(v.program, v.drum)
        if name not in names:
            names.append(name)
    return names


def key_name(key: Key | None) -> str | None:
    return None if key is None else f"{key.tonic} {key.mode}"


def facts(clip: Piece) -> dict[str, Any]:
    """The ``meta`` of a clip: tempo (quarter notes per minute, rounded), metre, key (None
    when unknown), instruments."""
    m = clip.meter
    return {
        "tempo": int(round(clip.bpm)),
        "metre": f"{m.numerator}/{m.denominator}",
        "key": key_name(clip.key),
        "instruments": instrument_names(clip),
    }


def answer(task: str, meta: dict[str, Any], abc: str, n_voices: int) -> str | None:
    """The assistant's answer for ``task``; None when the clip has no answer (unknown key)."""
    if task == "transcribe":
        return abc
    if task == "tempo":
        return f"{meta['tempo']} BPM"
    if task == "metre":
        return meta["metre"]
    if task == "key":
        return meta["key"]
    if task == "instruments":
        return ", ".join(meta["instruments"])
    if task == "voices":
        return str(n_voices)
    raise UserError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")


def parse_tasks(text: str) -> list[str]:
    """``transcribe,tempo`` -> ["transcribe", "tempo"]; UserError on an unknown name."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise UserError("--tasks: name at least one task")
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"--tasks: unknown task {t!r} (choose from {', '.join(TASKS)})")
    return list(dict.fromkeys(tasks))


# ---- splits ------------------------------------------------------------------------------------


def parse_split(text: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> ratios summing to 1, in the order given."""
    from abcscribe.core.files import parse_kv

    ratios = parse_kv(text, "--split")
    if not ratios:
        raise UserError("--split: name at least one split, e.g. train=0.8,val=0.1,test=0.1")
    if any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise UserError("--split: ratios must be non-negative and not all zero")
    for name in ratios:
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"--split: {name!r} is not a usable split name")
    total = sum(ratios.values())
    return {k: v / total for k, v in ratios.items()}


def split_of(piece_id: str, ratios: dict[str, float]) -> str:
    """The split a piece belongs to: a hash of its id placed on the cumulative ratios, so it
    never changes between runs and every clip of a piece lands in the same split."""
    h = int.from_bytes(hashlib.sha256(piece_id.encode("utf-8")).digest()[:8], "big") / 2**64
    acc = 0.0
    last = None
    for name, r in ratios.items():
        if r <= 0:
            continue
        acc += r
        last = name
        if h < acc:
            return name
    return last  # rounding at the very top of the range


# ---- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAOptions:
    """How sources become clips and records (one value for the whole run)."""

    max_seconds: float = 30.0
    min_bars: int = 1
    hop_bars: int | None = None
    max_bars: int | None = None
    tasks: tuple[str, ...] = TASKS
    seed: int = 0
    abc_layout: str = "voices"
    grid: int | None = 16  # quantization of MIDI scores (notes per whole note); None: raw
    splits: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
    official_splits: bool = True  # a dataset's own split wins over the hash of ``splits``
    render: bool = False  # render scores that have no recording
    audio_dir: Path | None = None  # where rendered audio goes
    sample_rate: int = 22050
    engine: str = "auto"  # core.audio.render engine: auto, fluidsynth, builtin
    soundfont: str | None = None
    overwrite: bool = False  # re-render audio that exists
    audio_base: Path | None = None  # record paths relative to this folder; None: absolute


def question(task: str, seed: int, record_id: str) -> str:
    """A phrasing of ``task``'s question, chosen by an RNG seeded from ``seed`` and the record's
    id (independent of the order records are made in)."""
    rng = random.Random(f"{seed}:{record_id}")
    return rng.choice(QUESTIONS[task])


def clip_abc(clip: Piece, layout: str = "voices") -> str:
    """The clip's ABC: header with meter, unit, tempo and key, one voice per sounding part."""
    from abcscribe.core.abc import write_abc

    return write_abc(clip, layout=layout)


def piece_records(
    piece_id: str,
    piece: Piece,
    audio: str,
    split: str,
    opts: QAOptions,
    key_known: bool = True,
    timing: str | None = None,
) -> list[dict[str, Any]]:
    """Every (clip, task) record of one piece, clips in time order, tasks in ``opts.tasks``
    order. Clips without notes are skipped; so is the key question when ``key_known`` is
    False (the ABC then carries an estimated key, which is no answer to learn). ``timing``
    says the piece's beats were tracked from a performance (``core.beats``): the tempo is
    then the clip's mean, the metre unknown (no metre question), and ``meta`` says so."""
    records: list[dict[str, Any]] = []
    spans = clip_piece(piece, opts.max_seconds, opts.min_bars, opts.hop_bars, opts.max_bars)
    k = 0
    for start, end in spans:
        clip = slice_piece(piece, start, end)
        if not clip.voices:
            continue
        abc = clip_abc(clip, opts.abc_layout)
        meta = facts(clip)
        offset = piece.seconds(start)
        duration = piece.seconds(end) - offset
        if timing is not None:
            meta["tempo"] = int(round(60.0 * (end - start) / piece.tpq / duration))
            meta["metre"] = None
            meta["timing"] = timing
        for task in opts.tasks:
            if (task == "key" and not key_known) or (task == "metre" and timing is not None):
                continue
            a = answer(task, meta, abc, len(clip.voices))
            if a is None:
                continue
            rid = f"{piece_id}:{k:03d}:{task}"
            records.append({
                "id": rid,
                "piece": piece_id,
                "split": split,
                "audio": audio,
                "offset": round(offset, 6),
                "duration": round(duration, 6),
                "task": task,
                "messages": [
                    {"role": "user", "content": [
                        {"type": "audio"},
                        {"type": "text", "text": question(task, opts.seed, rid)},
                    ]},
                    {"role": "assistant", "content": a},
                ],
                "abc": abc,
                "meta": meta,
            })
        k += 1
    return records


def read_score(path: Path, grid: int | None = 16) -> Piece:
    """The piece in a MIDI or ABC file, its time zero kept (so it stays aligned with its
    recording). UserError naming the file when it is unreadable or has no notes."""
    if path.suffix.lower() == ".abc":
        from abcscribe.core.abc import read_abc

        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
        piece, _warnings = read_abc(text)
    else:
        from abcscribe.core.midi import read_midi

        if not path.is_file():
            raise UserError(f"{path}: no such MIDI file")
        piece = read_midi(path, grid=grid, offset=0.0)
    if piece.note_count == 0:
        raise UserError(f"{path}: no notes")
    return piece


def audio_seconds(path: Path) -> float:
    """Length of a recording in seconds, from its header when libsndfile can read it."""
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:
        from abcscribe.core.audio import load_audio

        y, sr = load_audio(path)
        return len(y) / sr


def audio_ref(path: Path, base: Path | None) -> str:
    """How a record names its recording: relative to ``base`` (the output file's folder), or
    absolute when ``base`` is None."""
    a = os.path.abspath(path)
    return a if base is None else os.path.relpath(a, os.path.abspath(base))


def source_records(src, opts: QAOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of one ``core.layouts.Source`` and remarks worth a warning. Its error, an
    unreadable score, a missing recording (without ``opts.render``) is a UserError."""
    from abcscribe.core.layouts import load_piece

    if src.error:
        raise UserError(src.error)
    remarks = list(src.notes)
    piece, more, timing = load_piece(src, opts.grid)
    remarks += more
    if timing is not None and "metre" in opts.tasks:
        remarks.append(f"{src.id}: metre unknown (a performance, its beats tracked from the "
                       "notes); metre questions left out")
    audio = src.audio
    if audio is None:
        if not opts.render:
            raise UserError(f"{src.score}: no audio file shares its stem (use --render to make one)")
        audio = render_source(src.id, piece, opts, src.score)
    elif not audio.is_file():
        raise UserError(f"{audio}: audio file not found")
    length = audio_seconds(audio)
    official = getattr(src, "split", None) if opts.official_splits else None
    split = official or split_of(src.id, dict(opts.splits))
    key_known = piece.key is not None
    if not key_known:  # one estimate for the whole piece, so every clip has the same K:
        from abcscribe.core.abc import estimate_key

        piece.key = estimate_key(piece)
    recs = piece_records(src.id, piece, audio_ref(audio, opts.audio_base), split, opts, key_known,
                         timing)
    kept = [r for r in recs if r["offset"] < length - 1e-3]
    for r in kept:  # the last clip's bar may run past the recording's end: what is there
        r["duration"] = round(min(r["duration"], length - r["offset"]), 6)
    if len(kept) < len(recs):
        remarks.append(f"{src.id}: the score runs past the end of {audio} "
                       f"({length:.1f} s); clips beyond it left out")
    return kept, remarks


def render_source(piece_id: str, piece: Piece, opts: QAOptions, score: Path | None = None) -> Path:
    """Render ``piece`` to ``<audio_dir>/<piece_id>.wav`` and return the path. An existing file
    newer than ``score`` is kept, unless ``opts.overwrite``."""
    if opts.audio_dir is None:
        raise UserError("--render needs --audio-dir (or an output file to put the audio beside)")
    path = Path(opts.audio_dir) / f"{piece_id}.wav"
    if path.is_file() and not opts.overwrite and (
        score is None or path.stat().st_mtime >= score.stat().st_mtime
    ):
        return path  # rendered by an earlier run from this very score
    from abcscribe.core.audio import render, write_audio

    write_audio(path, render(piece, sr=opts.sample_rate, engine=opts.engine, soundfont=opts.soundfont), opts.sample_rate)
    return path


def map_sources(sources: list, opts: QAOptions, jobs: int = 1) -> Iterator[tuple[Any, Any]]:
    """``(source, (records, remarks))`` for each source in order, or ``(source, exception)``
    when it failed. With ``jobs`` > 1 sources are worked on in threads (rendering runs in
    subprocesses, so it overlaps); the order of the results never changes."""
    def work(src):
        try:
            return src, source_records(src, opts)
        except Exception as e:  # handed to the caller's batch guard
            return src, e

    if jobs <= 1:
        yield from map(work, sources)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        window: list = []
        it = iter(sources)
        for src in it:  # a bounded look-ahead keeps memory flat on big datasets
            window.append(pool.submit(work, src))
            if len(window) >= 4 * jobs:
                yield window.pop(0).result()
        for f in window:
            yield f.result()


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """All ``records`` as JSONL at ``path``, written atomically."""
    from abcscribe.core.files import atomic_write, dumps

    atomic_write(path, "".join(dumps(r) + "\n" for r in records))


def records_by_split(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r.get("split", ""), []).append(r)
    return out
