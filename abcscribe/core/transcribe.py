"""Audio to ABC with any ``AudioLM``: windows, batched generation, best-of, stitching.

A recording longer than the model's clip is cut into windows of at most
``window_seconds``, at bar lines of the tracked beat grid where beats are found (so each
window starts where the training clips of ``mkqa`` start: on a bar line). Every window is a
Q&A record (audio path + offset + duration + a transcription question); the model writes ABC
for each; the windows' ABC is read back into Pieces, shifted to the window's place in the
tune and merged into one Piece (voices matched by instrument, tempo and metre changes kept
inline), written once.

``transcribe_file(model, path, options)`` is the one-file API; ``transcribe_items`` runs a
stream of inputs with windows of several inputs batched together."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from abcscribe.core.baseline import SR as ANALYSIS_SR
from abcscribe.core.baseline import BeatInfo, track_beats
from abcscribe.core.errors import UserError
from abcscribe.core.models.base import AudioLM, GenerationOptions
from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

#: a window shorter than this is merged into the one before it (a model told nothing about a
#: half-second tail writes noise)
MIN_WINDOW_SECONDS = 2.0
#: grid that window boundaries snap to when they are not on bar lines: a sixteenth note
SNAP_TICKS = TPQ // 4
#: the question for an audio LLM that was not fine-tuned here: what to write, in the seed's form
INSTRUCTION = (
    "Transcribe this music into ABC notation. Write the header X:1, M: (time signature), "
    "L:1/16, Q: (tempo in quarter notes per minute) and K: (key), then for each instrument a "
    'line V:n name="<General MIDI instrument name>" followed by its notes, bars separated by |. '
    "Answer with the ABC only."
)
_HEADER_FIELD = re.compile(r"^[A-Za-z]:", re.MULTILINE)


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe: decoding (``generation``), window length (None: the model's),
    best-of N candidates, whether a model that hears revises the kept text by ear, the
    question asked (None: the record's, else the default)."""

    generation: GenerationOptions = field(default_factory=GenerationOptions)
    window_seconds: float | None = None
    best_of: int | None = None  # None: 16 for a model with a note encoder, else 1
    revise: bool = True  # a model with a note encoder: the kept text's notes checked by ear
    prompt: str | None = None
    batch_size: int = 1


@dataclass
class Window:
    start: float  # seconds from the start of the input's audio span
    end: float
    on_bar: bool = False  # cut at bar lines of a tracked beat grid

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Result:
    """One input's transcription: ``abc`` (one tune; with several samples, ``samples`` holds
    each stitched tune and ``abc`` the first), the stitched ``piece``, number of windows,
    seconds of audio, warnings from reading the model's ABC."""

    abc: str
    piece: Piece
    windows: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


# ---- windows -------------------------------------------------------------------------------


def plan_windows(duration: float, window_seconds: float, beats: BeatInfo | None = None) -> list[Window]:
    """Cut ``duration`` seconds into windows of at most ``window_seconds``, of about equal
    length, each boundary on the bar line (else the beat) nearest the even split when beats
    were found."""
    if window_seconds <= 0:
        raise UserError(f"--window-seconds must be positive, got {window_seconds}")
    if duration <= window_seconds + 1e-6:
        return [Window(0.0, duration, True)]
    n = math.ceil(duration / window_seconds - 1e-9)
    bars = beats_ = np.zeros(0)
    if beats is not None and beats.found:
        beats_ = np.asarray(beats.times, dtype=float)
        k = beats.meter[0]
        bars = beats_[beats.downbeat % k :: k]
    cuts: list[float] = []
    on_bar: list[bool] = []
    start = 0.0
    for _ in range(n - 1):
        left = duration - start
        remaining = math.ceil(left / window_seconds - 1e-9)
        if remaining <= 1:
            break
        target = start + left / remaining
        lo, hi = start + MIN_WINDOW_SECONDS, min(start + window_seconds, duration - MIN_WINDOW_SECONDS)
        cut, bar = _nearest(bars, target, lo, hi), True
        if cut is None:
            cut, bar = _nearest(beats_, target, lo, hi), False
        if cut is None:
            cut, bar = min(target, hi), False
        cuts.append(cut)
        on_bar.append(bar)
        start = cut
    edges = [0.0] + cuts + [duration]
    return [
        Window(edges[i], edges[i + 1], on_bar[i] if i < len(on_bar) else True)
        for i in range(len(edges) - 1)
    ]


def _nearest(points: np.ndarray, target: float, lo: float, hi: float) -> float | None:
    ok = points[(points >= lo) & (points <= hi)]
    if len(ok) == 0:
        return None
    return float(ok[np.argmin(np.abs(ok - target))])


# ---- one input, prepared ----------------------------------------------------------------------


@dataclass
class Job:
    """An input on its way through: its audio span, windows and one record per window."""

    path: Path
    offset: float
    seconds: float
    windows: list[Window]
    records: list[dict[str, Any]]
    title: str = ""


def question(record: dict[str, Any] | None, prompt: str | None, model: AudioLM) -> str:
    """The text the model is asked: ``--prompt``, else the record's own question, else the
    model's default, else the first transcription phrasing of ``mkqa``."""
    if prompt:
        return prompt
    for msg in (record or {}).get("messages") or []:
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str) and content.strip():
                return content.strip()
            for part in content or []:
                if isinstance(part, dict) and part.get("type") == "text" and part.get("text"):
                    return str(part["text"])
    default = getattr(model, "default_prompt", None)
    if default:
        return default
    meta = getattr(model, "meta", None) or {}
    if getattr(model, "family", "") == "hf-audio" and not ({"sft", "ppo"} & set(meta)):
        return INSTRUCTION  # a pretrained audio LLM has not learnt our questions' short form
    from abcscribe.core.qa import QUESTIONS

    return QUESTIONS["transcribe"][0]


def prepare(
    model: AudioLM,
    path: str | Path,
    options: TranscribeOptions,
    offset: float = 0.0,
    duration: float | None = None,
    record: dict[str, Any] | None = None,
) -> Job:
    """Load the audio span (a UserError naming the file when unreadable), track beats, plan
    the windows and build one Q&A record per window."""
    from abcscribe.core.audio import load_audio

    path = Path(path)
    audio, sr = load_audio(path, sr=ANALYSIS_SR, offset=offset, duration=duration)
    seconds = len(audio) / sr
    if seconds <= 0:
        raise UserError(f"{path}: no audio in the requested span")
    window = float(options.window_seconds or getattr(model, "window_seconds", 30.0) or 30.0)
    is_baseline = getattr(model, "family", "") == "baseline"
    # beats cost little and place window cuts on bar lines; the baseline also transcribes on
    # this one grid, so all its windows share one tempo and one bar grid
    beats = track_beats(audio, sr) if (seconds > window or is_baseline) else None
    windows = plan_windows(seconds, window, beats)
    text = question(record, options.prompt, model)
    records = []
    for i, w in enumerate(windows):
        rec: dict[str, Any] = {
            "id": f"{(record or {}).get('id', path.stem)}#{i}",
            "audio": str(path),
            "offset": round(offset + w.start, 6),
            "duration": round(w.seconds, 6),
            "messages": [
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": text}]}
            ],
        }
        if record and record.get("embedding") and len(windows) == 1 and duration is not None:
            rec["embedding"] = record["embedding"]  # precomputed features of exactly this clip
        if is_baseline:
            a, b = int(round(w.start * sr)), int(round(w.end * sr))
            rec["array"] = audio[a:b]
            if beats is not None and beats.found:
                rec["beats"] = beats.shifted(w.start, w.end).as_dict()
        records.append(rec)
    return Job(path, offset, seconds, windows, records, title=path.stem)


# ---- generation ------------------------------------------------------------------------------


def generate_windows(
    model: AudioLM, records: list[dict[str, Any]], options: TranscribeOptions
) -> list[list[str]]:
    """For each window record, ``num_samples`` texts, each the best of ``best_of`` samples;
    records go to the model ``batch_size`` at a time. A model with a note encoder chooses by
    ear: with ``options.revise`` every candidate is revised by ear and the revision that agrees
    most with the notes the encoder hears is kept (:func:`core.listen.best_revision`), without
    it the candidate whose own notes agree most, each under every key signature
    (:func:`core.listen.pick_by_ear`); others choose by consensus (:func:`pick_best`)."""
    from abcscribe.core.listen import best_revision, listen, pick_by_ear, sure

    k = max(1, options.generation.num_samples)
    n = best_of(model, options)
    gen = options.generation
    greedy_first = n > 1 and gen.temperature <= 0
    if greedy_first:  # the greedy text is one candidate, the others are samples
        gen = replace(gen, temperature=SAMPLE_TEMPERATURE)
    opts = replace(gen, num_samples=k * n - (1 if greedy_first else 0))
    out: list[list[str]] = []
    bs = max(1, options.batch_size)
    for i in range(0, len(records), bs):
        batch = records[i : i + bs]
        sampled = model.generate(batch, opts) if opts.num_samples else [[] for _ in batch]
        if greedy_first:
            greedy = model.generate(batch, replace(gen, temperature=0.0, num_samples=1))
            sampled = [g + s for g, s in zip(greedy, sampled)]
        for rec, texts in zip(batch, sampled):
            heard = listen(model, rec)
            groups = [texts[j * n : (j + 1) * n] for j in range(k)]
            if heard is None:
                out.append([g[pick_best(g)] for g in groups])
                continue
            if options.revise:
                out.append([best_revision(g, heard) for g in groups])
            else:
                out.append([pick_by_ear(g, sure(heard)) for g in groups])
    return out


SAMPLE_TEMPERATURE = 0.8  # samples beside the greedy text when --best-of asks for several
BEST_OF_BY_EAR = 16  # default --best-of of a model that hears (measured: note F1 rises to 16)


def best_of(model: AudioLM, options: TranscribeOptions) -> int:
    """Samples per transcription: ``options.best_of``, or by default :data:`BEST_OF_BY_EAR`
    for a model with a note encoder (its ear chooses) and 1 for others."""
    from abcscribe.core.listen import hears

    if options.best_of:
        return max(1, options.best_of)
    return BEST_OF_BY_EAR if hears(model) else 1


def pick_best(samples: list[str]) -> int:
    """Index of the sample that reads cleanly and agrees most with the others: the mean
    reward (tempo, metre, instruments, notes) of it against each other sample as reference.
    Samples that read with warnings or without notes are only chosen when no sample reads
    cleanly."""
    if len(samples) <= 1:
        return 0
    from abcscribe.core.abc import extract_abc, read_abc
    from abcscribe.core.reward import score

    texts = [extract_abc(s) for s in samples]
    parsed = []
    for t in texts:
        try:
            piece, warns = read_abc(t)
            parsed.append((piece.note_count, len(warns)))
        except Exception:  # a model's garbage: never chosen if anything else reads
            parsed.append((0, 1))
    clean = [i for i, (n, w) in enumerate(parsed) if n and not w]
    pool = clean or [i for i, (n, _) in enumerate(parsed) if n] or list(range(len(samples)))
    if len(pool) == 1:
        return pool[0]

    def agreement(i: int) -> float:
        total = 0.0
        for j in range(len(texts)):
            if j == i or not parsed[j][0]:
                continue
            try:
                total += score(texts[j], texts[i], note_metrics=False).reward
            except Exception:  # the other sample is not a readable reference
                pass
        return total

    return max(pool, key=lambda i: (agreement(i), -i))


# ---- stitching -------------------------------------------------------------------------------


def read_window(text: str) -> tuple[Piece, list[str], bool]:
    """A window's Piece, warnings, and whether the ABC stated a tempo (Q:)."""
    from abcscribe.core.abc import extract_abc, read_abc

    abc = extract_abc(text or "")
    if not _HEADER_FIELD.search(abc):  # prose, or note-like garbage: not an ABC tune
        return Piece(), ["no ABC header in the model's answer"], False
    try:
        piece, warns = read_abc(abc)
    except Exception as e:  # the reader promises not to raise; a model's output is not ours
        return Piece(), [f"unreadable ABC ({type(e).__name__}: {e})"], False
    has_q = any(line.strip().startswith("Q:") or "[Q:" in line for line in abc.splitlines())
    return piece.sort(), list(warns), has_q


def stitch(texts: list[str], windows: list[Window], title: str = "") -> tuple[Piece, list[str]]:
    """One Piece from the ABC of consecutive windows: each window placed at the tick its start
    falls on (through the tempo map so far; on the nearest bar line when the window was cut on
    one), voices merged by instrument (GM program, drums apart), tempo and metre changes kept
    where a window changes them, notes past a window's end cut there."""
    out = Piece(voices=[], tempos=[], meters=[], title=title)
    warnings: list[str] = []
    keys: Counter = Counter()
    t0 = 0  # tick where the current window starts
    for w_i, (text, win) in enumerate(zip(texts, windows)):
        piece, warns, has_q = read_window(text)
        tag = f"window {w_i + 1}" if len(windows) > 1 else ""
        warnings += [f"{tag}: {m}" if tag else m for m in warns]
        if not piece.note_count:
            warnings.append(f"{tag + ': ' if tag else ''}no notes")
        if w_i == 0:
            out.anacrusis = piece.anacrusis
        # tempo and metre: the window's map, shifted; a window silent about tempo keeps ours
        if has_q or not out.tempos:
            for tp in sorted(piece.tempos or [Tempo(0, 120.0)], key=lambda t: t.tick):
                if not out.tempos or out.tempo_at(t0 + tp.tick) != tp.bpm:
                    _set(out.tempos, Tempo(t0 + tp.tick, tp.bpm))
        for m in sorted(piece.meters or [Meter(0, 4, 4)], key=lambda m: m.tick):
            cur = out.meter_at(t0 + m.tick) if out.meters else None
            if cur is None or (cur.numerator, cur.denominator) != (m.numerator, m.denominator):
                _set(out.meters, Meter(t0 + m.tick, m.numerator, m.denominator))
        if piece.key is not None and piece.note_count:
            keys[piece.key] += piece.note_count
        # the window's length in its own ticks (its own tempo map when it wrote one)
        timeline = piece if has_q else _with_tempo(out, t0)
        t1 = _next_start(out, t0, max(int(round(timeline.tick_at(win.seconds))), SNAP_TICKS), win.on_bar)
        span = t1 - t0
        dropped = 0
        used: set[int] = set()
        for v in piece.voices:
            if not v.notes:
                continue
            target = _match_voice(out, v, used)
            used.add(target)
            for n in v.notes:
                if n.start >= span:
                    dropped += 1
                    continue
                dur = min(n.duration, span - n.start)
                out.voices[target].notes.append(Note(n.pitch, t0 + n.start, dur, n.velocity))
        if dropped:
            warnings.append(f"{tag or 'window'}: {dropped} notes past the window's end dropped")
        t0 = t1
    out.tempos = out.tempos or [Tempo(0, 120.0)]
    out.meters = out.meters or [Meter(0, 4, 4)]
    out.key = keys.most_common(1)[0][0] if keys else None
    return out.sort(), warnings


def _set(events: list, ev) -> None:
    """Add a tempo/metre event, replacing one at the same tick."""
    events[:] = [e for e in events if e.tick != ev.tick] + [ev]
    events.sort(key=lambda e: e.tick)


def _with_tempo(out: Piece, t0: int) -> Piece:
    return Piece(tempos=[Tempo(0, out.tempo_at(t0) if out.tempos else 120.0)])


def _match_voice(out: Piece, v: Voice, used: set[int]) -> int:
    """Index of the stitched voice that continues ``v``: the first unused one with the same
    instrument, else a new voice."""
    for i, o in enumerate(out.voices):
        if i not in used and o.drum == v.drum and (o.drum or o.program == v.program):
            return i
    out.voices.append(Voice(notes=[], program=v.program, name=v.name, drum=v.drum))
    return len(out.voices) - 1


def _next_start(out: Piece, t0: int, span: int, on_bar: bool) -> int:
    """Where the next window starts: ``t0 + span`` moved to the nearest bar line when the
    window was cut on one, else to the sixteenth-note grid."""
    end = t0 + span
    if on_bar:
        bars = [b for b in out.bar_starts(end + 2 * _bar_len(out, end)) if b > t0]
        if bars:
            return min(bars, key=lambda b: abs(b - end))
    return max(t0 + SNAP_TICKS, int(round(end / SNAP_TICKS)) * SNAP_TICKS)


def _bar_len(out: Piece, tick: int) -> int:
    return (out.meter_at(tick) if out.meters else Meter(0, 4, 4)).bar_ticks


# ---- whole inputs ----------------------------------------------------------------------------


def finish(job: Job, texts: list[list[str]]) -> Result:
    """Stitch each sample's windows into one tune (``texts``: per window, the samples)."""
    from abcscribe.core.abc import write_abc

    k = len(texts[0]) if texts else 1
    tunes, pieces, warnings = [], [], []
    for s in range(k):
        piece, warns = stitch([t[s] for t in texts], job.windows, title=job.title)
        tunes.append(write_abc(piece, x=s + 1, title=job.title or None))
        pieces.append(piece)
        if s == 0:
            warnings = warns
    return Result(tunes[0], pieces[0], len(job.windows), round(job.seconds, 3), warnings,
                  tunes if k > 1 else [])


def transcribe_file(
    model: AudioLM,
    path: str | Path,
    options: TranscribeOptions | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> Result:
    """Transcribe one audio file (or the span ``offset``..``offset + duration`` of it)."""
    options = options or TranscribeOptions()
    job = prepare(model, path, options, offset, duration)
    return finish(job, generate_windows(model, job.records, options))


@dataclass
class Input:
    """One input of a batch: the audio file, its span, and the record it came from."""

    path: Path
    offset: float = 0.0
    duration: float | None = None
    record: dict[str, Any] | None = None
    tag: Any = None  # anything the caller wants back with the result


def transcribe_items(
    model: AudioLM, inputs: Iterable[Input], options: TranscribeOptions
) -> Iterator[tuple[Input, Result | Exception]]:
    """Transcribe a stream of inputs, in order, yielding (input, Result) or (input, the
    exception that stopped it: unreadable audio, a failed generation). Windows of several
    inputs fill each generation batch of ``options.batch_size``."""
    pending: list[tuple[Input, Job | Exception]] = []
    n_windows = 0
    for inp in inputs:
        try:
            job: Job | Exception = prepare(model, inp.path, options, inp.offset, inp.duration, inp.record)
            n_windows += len(job.records)  # type: ignore[union-attr]
        except Exception as e:  # reported per input; KeyboardInterrupt still stops the batch
            job = e
        pending.append((inp, job))
        if n_windows >= max(1, options.batch_size):
            yield from _run(model, pending, options)
            pending, n_windows = [], 0
    if pending:
        yield from _run(model, pending, options)


def _run(model, pending, options) -> Iterator[tuple[Input, Result | Exception]]:
    jobs = [j for _, j in pending if isinstance(j, Job)]
    records = [r for j in jobs for r in j.records]
    try:
        texts = generate_windows(model, records, options) if records else []
        failure: Exception | None = None
    except Exception as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):  # pragma: no cover
            raise
        texts, failure = [], e
    pos = 0
    for inp, job in pending:
        if not isinstance(job, Job):
            yield inp, job
            continue
        if failure is not None:
            yield inp, failure
            continue
        n = len(job.records)
        try:
            yield inp, finish(job, texts[pos : pos + n])
        except Exception as e:
            yield inp, e
        pos += n


def load_transcriber(spec: str, device: str = "cpu", dtype: str | None = None) -> AudioLM:
    """``baseline`` or anything ``core.models.load_model`` reads (an sft/ppo directory, an
    audio LLM directory or hub id)."""
    if spec == "baseline":
        from abcscribe.core.baseline import Baseline

        return Baseline()
    from transformers.utils import logging as hf_logging

    from abcscribe.core.models import load_model
    from abcscribe.core.models.common import one_thread_for_small_cpu_model

    hf_logging.disable_progress_bar()  # one progress line on stderr: ours
    model = load_model(spec, device=device, dtype=dtype)
    one_thread_for_small_cpu_model(model)
    return model


# ---- files written with -o DIR ----------------------------------------------------------------


def output_paths(
    out_dir: Path | None, rel: Path, from_record: bool, midi: bool = False, musicxml: bool = False,
    svg: bool = False,
) -> dict[str, Path]:
    """The files an input gets under ``out_dir`` (empty without one): ``<stem>.abc``, and
    ``.mid``/``.musicxml``/``.svg`` when asked, at the input's path relative to the folder it was found
    in (a JSONL record: its id)."""
    if out_dir is None:
        return {}
    # a record id may hold dots ("tune.0003"): keep it whole rather than replace a "suffix"
    base = out_dir / rel.parent / (rel.name if from_record else rel.stem)
    paths = {"abc": base.with_name(base.name + ".abc")}
    if midi:
        paths["mid"] = base.with_name(base.name + ".mid")
    if musicxml:
        paths["musicxml"] = base.with_name(base.name + ".musicxml")
    if svg:
        paths["svg"] = base.with_name(base.name + ".svg")
    return paths


def read_done(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def write_outputs(result: Result, paths: dict[str, Path]) -> None:
    """Write the ABC (every sample, one tune each), MIDI, MusicXML and SVG of ``result``,
    each atomically; the ABC last, so its presence means the input is complete."""
    from abcscribe.core.files import atomic_write

    if "mid" in paths:
        from abcscribe.core.midi import write_midi

        write_midi(result.piece, paths["mid"])
    if "musicxml" in paths:
        atomic_write(paths["musicxml"], musicxml_of(result.abc))
    if "svg" in paths:
        from abcscribe.core.engrave import write_svg

        write_svg(result.abc, paths["svg"])
    atomic_write(paths["abc"], "\n".join(result.samples) if result.samples else result.abc)


def musicxml_of(abc: str) -> bytes:
    """MusicXML of one ABC tune, read by our own ABC reader (any layout, any tune)."""
    from abcscribe.core.abc import read_abc
    from abcscribe.core.musicxml import write_musicxml

    piece, _ = read_abc(abc)
    return write_musicxml(piece)
