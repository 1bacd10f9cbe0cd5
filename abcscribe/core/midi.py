"""MIDI <-> Piece: reading (type 0 and 1), quantizing to a grid, and writing type 1 files.

Parsing uses symusic (a C++ MIDI parser, about 50x faster than mido on large files); everything
after parsing works on numpy arrays so a file of 100,000 notes reads in a fraction of a second.
Writing is a small encoder of our own, so the layout (conductor track, one track per voice,
drums on channel 10) is exactly what ``write_midi`` promises.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.machinery
import importlib.util
import re
import struct
import sys
import threading
from pathlib import Path

import numpy as np

from abcscribe.core.errors import UserError
from abcscribe.core.files import atomic_write
from abcscribe.core.gm import program_name
from abcscribe.core.notes import TPQ, Key, Meter, Note, Piece, Tempo, Voice

DRUM_CHANNEL = 9  # channel 10 in 1-based numbering

# Tonic of each key signature, indexed by fifths + 7 (-7 .. 7).
_MAJOR_TONICS = ("Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#")
_MINOR_TONICS = ("Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#")
_MODE_SHIFT = {  # fifths of a mode relative to the major key on the same tonic
    "major": 0, "ionian": 0, "minor": -3, "aeolian": -3, "dorian": -2, "phrygian": -4,
    "lydian": 1, "mixolydian": -1, "locrian": -5,
}


# ---- reading ------------------------------------------------------------------------------


def read_midi(
    source: str | Path | bytes,
    *,
    grid: int | None = 16,
    triplets: bool = True,
    offset: float | None = None,
    sustain: bool = False,
) -> Piece:
    """Read a type 0 or type 1 MIDI file (a path or its bytes) into a ``Piece``.

    Each (track, channel, program) with notes becomes a voice (channel 10 is drums); tempo map,
    time and key signatures and track names are kept. With ``grid`` (notes per whole note) the
    notes are quantized (see ``quantize``) after removing a constant lead-in: ``offset`` seconds,
    or, when None, an estimate (zero for files already on the grid). ``grid=None`` keeps the raw
    timing, rescaled to ``TPQ``. With ``sustain`` a note released while the sustain pedal
    (CC64 >= 64) is down sounds until the pedal comes up (see ``apply_sustain``). Corrupt or
    non-MIDI input is a ``UserError`` naming the file."""
    piece, columns = read_midi_columns(
        source, grid=grid, triplets=triplets, offset=offset, sustain=sustain
    )
    _make_notes(piece, columns)
    return piece


def read_midi_columns(
    source: str | Path | bytes,
    *,
    grid: int | None = 16,
    triplets: bool = True,
    offset: float | None = None,
    sustain: bool = False,
    warnings: list[str] | None = None,
) -> tuple[Piece, list[tuple[list[int], list[int], list[int], list[int]]]]:
    """``read_midi`` for a converter that goes straight on to another format (``write_abc``
    takes these columns): the same ``Piece`` but without ``Note`` objects, whose making is a
    third of the reading time of a long file. Each voice's ``notes`` is left empty; the list
    holds, per voice, its notes as four lists (starts, pitches, durations, velocities) sorted
    by start, pitch and duration, the order of ``read_midi``'s notes. Flaws of the file that
    the reading repairs are told in ``warnings`` when given."""
    data, name = _load(source)
    score = _parse(data, name)
    step = _grid_step(grid) if grid is not None else None
    scale = TPQ / score.ticks_per_quarter

    tempos = _read_tempos(score, scale)
    meters = _read_meters(score, scale)
    key = _read_key(score)

    voices: list[Voice] = []
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for tr in score.tracks:
        if tr.note_num() == 0:
            continue
        a = tr.notes.numpy()
        start = a["time"].astype(np.float64) * scale
        end = start + np.maximum(a["duration"].astype(np.float64), 0.0) * scale
        pitch = a["pitch"].astype(np.int64) & 0x7F  # int8 in symusic; pitches are 0..127
        vel = a["velocity"].astype(np.int64) & 0x7F
        drum = bool(tr.is_drum)
        if sustain and not drum and len(tr.controls):
            c = tr.controls.numpy()
            cc64 = c["number"] == 64
            end = apply_sustain(start, end, pitch, c["time"][cc64].astype(np.float64) * scale,
                                c["value"][cc64].astype(np.int64))
        voices.append(
            Voice(program=0 if drum else int(tr.program), name=str(tr.name).strip(), drum=drum)
        )
        arrays.append((start, end, pitch, vel))

    piece = Piece(voices=voices, tempos=tempos, meters=meters, key=key)
    title = _conductor_name(data)
    if title and all(v.name != title for v in voices):
        piece.title = title
    if not voices:
        return piece, []

    starts = np.concatenate([a[0] for a in arrays])
    ends = np.concatenate([a[1] for a in arrays])
    _check_length(ends, [t.tick for t in tempos] + [m.tick for m in meters], name)
    pitches = np.concatenate([a[2] for a in arrays])
    vels = np.concatenate([a[3] for a in arrays])
    vidx = np.repeat(np.arange(len(arrays)), [len(a[0]) for a in arrays])

    tstep = _triplet_step(grid, step) if (triplets and step) else None
    # A constant lead-in: given in seconds, or estimated from how the onsets sit on the grid.
    # Files from notation need none, or only a tick or two (abc2midi delays every note so).
    notated, shift = False, 0.0
    if offset is not None:
        shift = Piece(tempos=tempos).tick_at(max(float(offset), 0.0))
    elif step is not None:
        micro = _micro_offset(starts, step)
        if _is_notated(starts, step, 0.5 * scale, tstep):
            notated = True
        elif micro and _is_notated(starts - micro, step, 0.5 * scale, tstep):
            notated, shift = True, micro
        else:
            shift = estimate_shift(starts, step, tstep)
    if shift:
        starts = starts - shift
        ends = ends - shift
        keep = ends > 0
        starts, ends, pitches, vels, vidx = (
            np.maximum(starts[keep], 0.0), ends[keep], pitches[keep], vels[keep], vidx[keep]
        )

    if step is not None:
        # after removing a lead-in, a file that was exact but shifted reads as notation
        qs, qe = _quantize_arrays(
            starts, ends, vidx, step, tstep, 0.5 * scale, notated or None
        )
        piece.tempos = _snap_events(piece.tempos, step)
        piece.meters = _snap_events(piece.meters, step)
    else:
        qs = np.rint(starts).astype(np.int64)
        qe = np.maximum(np.rint(ends).astype(np.int64), qs + 1)
    held = _held_over(qs, qe, pitches, vidx)
    if held.any():
        qe = _end_at_next_onset(qs, qe, vidx, held)
        if warnings is not None:
            warnings.append(f"{int(held.sum())} notes sound on past the next note of their pitch "
                            "(note-ons without their note-offs?): each ends where the next note "
                            "of its track begins")
    return piece, _fill_voices(piece, qs, qe, pitches, vels, vidx)


def apply_sustain(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, times: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Note ends with the sustain pedal applied, as MAESTRO's own evaluations read a
    performance: a note released while the pedal is down (``values`` >= 64 at ``times``)
    lasts until the pedal comes up, or until its pitch is struck again, whichever is first."""
    if len(times) == 0 or len(start) == 0:
        return end
    order = np.argsort(times, kind="stable")
    times, down = times[order], values[order] >= 64
    change = np.concatenate(([True], down[1:] != down[:-1]))  # repeated values change nothing
    times, down = times[change], down[change]
    presses = times[down]
    releases = np.full(len(presses), np.inf)
    idx = np.flatnonzero(down)
    has_up = idx + 1 < len(times)
    releases[has_up] = times[idx[has_up] + 1]
    releases[np.isinf(releases)] = max(float(end.max()), float(times[-1]))  # held to the end
    k = np.searchsorted(presses, end, side="right") - 1
    held = (k >= 0) & (end < releases[np.maximum(k, 0)])
    new_end = np.where(held, releases[np.maximum(k, 0)], end)
    # a sustained note stops where its pitch is struck again
    order = np.lexsort((start, pitch))
    nxt = np.full(len(start), np.inf)
    same = pitch[order][1:] == pitch[order][:-1]
    nxt[order[:-1][same]] = start[order][1:][same]
    return np.where(held, np.maximum(end, np.minimum(new_end, nxt)), end)


def _held_over(qs, qe, pitches, vidx) -> np.ndarray:
    """Which notes sound on past the start of the next note of their pitch in their voice: a
    flawed file's note-on whose note-off is missing (read as paired with a later note's)."""
    held = np.zeros(len(qs), bool)
    if len(qs) < 2:
        return held
    order = _lexsort((qs, pitches, vidx))
    s, e, p, v = qs[order], qe[order], pitches[order], vidx[order]
    same = (v[1:] == v[:-1]) & (p[1:] == p[:-1])
    held[order[:-1]] = same & (e[:-1] > s[1:]) & (s[:-1] < s[1:])
    return held


def _end_at_next_onset(qs, qe, vidx, held) -> np.ndarray:
    """``qe`` with each ``held`` note ending at the next onset in its voice after its start."""
    span = int(qs.max()) + 1
    key = vidx.astype(np.int64) * span + qs
    sk = np.sort(key)
    nxt = np.minimum(np.searchsorted(sk, key[held], side="right"), len(sk) - 1)
    nk = sk[nxt]
    ok = (nk // span == vidx[held]) & (nk % span > qs[held])
    qe = qe.copy()
    qe[held] = np.where(ok, np.minimum(qe[held], nk % span), qe[held])
    return qe


# The longest piece read, in quarter notes (about 8 hours at 200 BPM): a longer one is a
# corrupt delta time (a 37-byte file can say 0x0FFFFFFF quarters), not music.
MAX_QUARTERS = 100_000


def _check_length(ends: np.ndarray, event_ticks: list, name: str) -> None:
    last = max(float(ends.max()) if ends.size else 0.0, max(event_ticks, default=0))
    if last > MAX_QUARTERS * TPQ:
        raise UserError(f"{name}: lasts {last / TPQ:,.0f} quarter notes, more than the "
                        f"{MAX_QUARTERS:,} abcscribe reads (a corrupt delta time?)")


def _load(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<midi bytes>"
    name = str(source)
    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{name}: is a folder, not a MIDI file") from None
    except OSError as e:
        raise UserError(f"{name}: cannot read ({e.strerror or e})") from None
    return data, name


def _parse(data: bytes, name: str):
    if not data:
        raise UserError(f"{name}: empty file, not MIDI")
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":  # RIFF-wrapped MIDI (.rmi)
        i = data.find(b"MThd")
        data = data[i:] if i >= 0 else data
    if data[:4] != b"MThd":
        raise UserError(f"{name}: not a MIDI file (no MThd header)")
    if len(data) < 14:
        raise UserError(f"{name}: corrupt MIDI (truncated header)")
    fmt, ntracks, division = struct.unpack(">HHH", data[8:14])
    if fmt > 2:
        raise UserError(f"{name}: corrupt MIDI (unknown format {fmt})")
    if division & 0x8000:
        raise UserError(f"{name}: SMPTE time division is not supported (only ticks per quarter)")
    if division == 0:
        raise UserError(f"{name}: corrupt MIDI (zero ticks per quarter)")
    core = _symusic_core()
    try:
        return core.ScoreTick.from_midi(data, False)  # what symusic.Score.from_midi(data) does
    except Exception as e:  # symusic raises RuntimeError with a message from its parser
        raise UserError(f"{name}: corrupt MIDI ({_reason(e)})") from None


_CORE = None
_CORE_LOCK = threading.Lock()


def _symusic_core():
    """symusic's C++ module (its parser), loaded once even when threads read MIDI at the same
    time (mkqa's workers did: two loads registered its types twice, and a thread could get the
    module before it was initialised)."""
    global _CORE
    if _CORE is None:
        with _CORE_LOCK:
            if _CORE is None:
                _CORE = _load_symusic_core()
    return _CORE


def _load_symusic_core():
    """symusic's C++ module. Imported on first use so `abcscribe --help` stays
    fast, and without running the package's ``__init__`` when nothing imported it yet: that
    also imports a soundfont downloader (urllib, http, email) which parsing does not need:
    ``import symusic`` takes 120-180 ms of CPU, its C++ module alone 13 ms, and a ``midi2abc``
    run on examples/bench/midi2abc.py's folder (143k notes) about 1 s. A later ``import
    symusic`` gets this same module as ``symusic.core`` (the one import hook of the
    package, _SymusicCoreBinder)."""
    core = sys.modules.get("symusic.core")
    if core is not None:
        return core
    if "symusic" not in sys.modules:
        try:
            spec = importlib.util.find_spec("symusic")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = Path(spec.submodule_search_locations[0]) / ("core" + suffix)
                if path.is_file():
                    break
            else:
                raise ImportError("symusic.core not found")
            cspec = importlib.util.spec_from_file_location("symusic.core", path)
            core = importlib.util.module_from_spec(cspec)
            sys.modules["symusic.core"] = core
            try:
                cspec.loader.exec_module(core)
            except BaseException:
                del sys.modules["symusic.core"]
                raise
            sys.meta_path.insert(0, _SymusicCoreBinder())
            return core
        except (ImportError, AttributeError, TypeError, IndexError, OSError):
            pass  # an unusual install: the ordinary way below
    import symusic

    return symusic.core


class _SymusicCoreBinder:
    """Import hook for a later ``import symusic`` after ``_symusic_core`` loaded its C++ module
    alone: sets that module as the package's ``core`` before the package's ``__init__`` runs."""

    def find_spec(self, name, path=None, target=None):
        if name != "symusic":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            module.core = sys.modules["symusic.core"]
            run(module)

        spec.loader.exec_module = exec_module
        return spec


def _conductor_name(data: bytes) -> str:
    """The track name at the very start of a type 1 file's first track (its title), or ''."""
    try:
        if struct.unpack(">H", data[8:10])[0] != 1 or data[14:18] != b"MTrk":
            return ""
        end = 22 + struct.unpack(">I", data[18:22])[0]
        pos = 22
        while pos < min(end, len(data)) - 3:
            if data[pos] != 0 or data[pos + 1] != 0xFF:  # only delta-0 meta events at the start
                return ""
            kind = data[pos + 2]
            pos += 3
            length = 0
            while True:
                b = data[pos]
                pos += 1
                length = (length << 7) | (b & 0x7F)
                if not b & 0x80:
                    break
            if kind == 0x03:
                return data[pos : pos + length].decode("utf-8", "replace").strip()
            pos += length
    except (IndexError, struct.error):
        pass
    return ""


def _reason(e: Exception) -> str:
    msg = str(e).replace("MiniMidi: ", "").replace("Invaild", "invalid")
    msg = re.sub(r":\s*iostream error.*$", "", msg.splitlines()[0] if msg else "").strip(" !:")
    m = re.match(r"Get (\w+)=(\d+)", msg)
    if m:
        return f"{m.group(1)} value {m.group(2)} out of range"
    if "EOF" in msg or "remaining bytes" in msg:
        return "truncated: " + msg[:80]
    return msg[:120] or type(e).__name__


def _read_tempos(score, scale: float) -> list[Tempo]:
    out: list[Tempo] = []
    for t in score.tempos:
        mspq = int(t.mspq)
        if mspq <= 0:
            continue
        bpm = 60_000_000.0 / mspq
        if int(round(60_000_000.0 / round(bpm, 3))) == mspq:
            bpm = round(bpm, 3)  # 107.0 rather than 106.99994 when the file cannot tell apart
        tick = int(round(int(t.time) * scale))
        if out and out[-1].tick == tick:
            out[-1] = Tempo(tick, bpm)
        elif not out or out[-1].bpm != bpm:
            out.append(Tempo(tick, bpm))
    if not out or out[0].tick > 0:
        out.insert(0, Tempo(0, 120.0))  # the MIDI default until the first set_tempo
    return out


def _read_meters(score, scale: float) -> list[Meter]:
    out: list[Meter] = []
    for ts in score.time_signatures:
        num, den = int(ts.numerator), int(ts.denominator)
        if num < 1 or den < 1 or den & (den - 1) or den > 64:
            continue
        tick = int(round(int(ts.time) * scale))
        if out and out[-1].tick == tick:
            out[-1] = Meter(tick, num, den)
        elif not out or (out[-1].numerator, out[-1].denominator) != (num, den):
            out.append(Meter(tick, num, den))
    if not out or out[0].tick > 0:
        out.insert(0, Meter(0, 4, 4))  # the MIDI default
    return out


def _read_key(score) -> Key | None:
    for ks in score.key_signatures:
        fifths = max(-7, min(7, int(ks.key)))
        minor = int(ks.tonality) == 1
        return key_from_fifths(fifths, "minor" if minor else "major")
    return None


def find_pickup(piece: Piece, columns=None) -> int:
    """Ticks of the pickup bar that the notes imply (0: none), for a file that cannot say so
    (MIDI has no anacrusis). Where a later meter change falls tells the bar lines; else they
    go where the most note time starts (long notes and chords fall on strong beats): first
    the place within the beat (a folk tune's upbeat is mostly an eighth), then which beat is
    the bar's first. Each step moves the file's own bar lines only when the notes clearly
    say so, and the music must end on a bar line of the grid found (or say so very clearly).
    ``columns``: the voices' notes as ``read_midi_columns`` gives them (else
    ``Voice.notes``)."""
    meters = piece.meters or [Meter(0, 4, 4)]
    m = meters[0]
    bar = m.bar_ticks
    if m.tick != 0 or bar <= 0:
        return 0
    if len(meters) > 1:  # a meter changes on a bar line
        return meters[1].tick % bar
    starts, durations = _pitched_notes(piece, columns)
    if not len(starts):
        return 0
    compound = m.denominator >= 8 and m.numerator % 3 == 0
    beat = TPQ * 4 // m.denominator * (3 if compound else 1)
    step = min(beat, TPQ // 2)  # an eighth, or the beat when shorter
    if bar % beat or beat % step:
        return 0
    weight = _onset_weight(starts, durations, bar, step)
    per_beat = beat // step
    beats = bar // beat
    # the place within the beat: the note time on each place, summed over the bar's beats
    within = weight.reshape(beats, per_beat).sum(axis=0)
    phase = int(np.argmax(within))
    if within[phase] < 1.05 * within[0]:
        phase = 0
    # which beat: duple meters (2/4, 4/4, 6/8) count the half bar with the bar line (4/4
    # chorales hold their long notes on beat 3 as often as on beat 1), and of the two the
    # earlier one: a pickup of a beat is far more common than one of three
    on_beats = weight[phase::per_beat]
    if beats % 2 == 0:
        on_beats = on_beats[:beats // 2] + on_beats[beats // 2:]
    first = int(np.argmax(on_beats))
    if on_beats[first] < 1.05 * on_beats[0]:
        first = 0
    pickup = phase * step + first * beat
    if not pickup:
        return 0
    end = int((starts + durations).max())
    clear = weight[pickup // step] >= 1.5 * weight[0]
    # the last bar is full, or it completes the pickup bar: the end is on a bar line either
    # way, unless the notes leave no doubt (a last note held short of the bar's end)
    return pickup if end % bar in (0, pickup) or clear else 0


def _pitched_notes(piece: Piece, columns) -> tuple[np.ndarray, np.ndarray]:
    """Starts and durations of every note outside drum voices."""
    starts, durations = [], []
    for i, v in enumerate(piece.voices):
        if v.drum:
            continue
        if columns is not None:
            starts.append(np.asarray(columns[i][0], dtype=np.int64))
            durations.append(np.asarray(columns[i][2], dtype=np.int64))
        else:
            starts.append(np.array([n.start for n in v.notes], dtype=np.int64))
            durations.append(np.array([n.duration for n in v.notes], dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(durations)


def _onset_weight(starts: np.ndarray, durations: np.ndarray, bar: int, step: int) -> np.ndarray:
    """Note time starting on each ``step`` of the bar: for each place a bar line could go,
    what would start there."""
    phase = starts % bar
    on = phase % step == 0
    weight = np.zeros(bar // step)
    np.add.at(weight, phase[on] // step, durations[on])
    return weight


def key_from_fifths(fifths: int, mode: str = "major") -> Key:
    """The ``Key`` of a key signature (``fifths`` sharps, negative for flats) in ``mode``."""
    mode = mode.lower()
    if mode in ("major", "ionian"):
        tonic = _MAJOR_TONICS[fifths + 7]
    elif mode in ("minor", "aeolian"):
        tonic = _MINOR_TONICS[fifths + 7]
    else:
        shift = _MODE_SHIFT.get(mode, 0)
        tonic = _MAJOR_TONICS[max(-7, min(7, fifths - shift)) + 7]
    return Key(fifths=fifths, mode=mode, tonic=tonic)


def _fill_voices(piece, qs, qe, pitches, vels, vidx) -> list[tuple[list[int], ...]]:
    """Sort the flat arrays into each voice's (starts, pitches, durations, velocities) columns,
    dropping same-pitch duplicates, cutting same-pitch overlaps, and dropping voices left
    without notes (from ``piece.voices`` too)."""
    qs, qe, pitches, vels, vidx = _resolve_overlaps(qs, qe, pitches, vels, vidx)
    order = _lexsort((qe - qs, pitches, qs, vidx))
    qs, qe, pitches, vels, vidx = qs[order], qe[order], pitches[order], vels[order], vidx[order]
    bounds = np.searchsorted(vidx, np.arange(len(piece.voices) + 1)).tolist()
    s_l, d_l, p_l = qs.tolist(), (qe - qs).tolist(), pitches.tolist()
    v_l = np.clip(vels, 1, 127).tolist()
    kept, columns = [], []
    for i, voice in enumerate(piece.voices):
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            continue
        kept.append(voice)
        columns.append((s_l[a:b], p_l[a:b], d_l[a:b], v_l[a:b]))
    piece.voices = kept
    return columns


def _make_notes(piece: Piece, columns) -> None:
    """Each voice's ``notes`` from its columns (``_fill_voices``)."""
    # Making 143k Notes (examples/bench/midi2abc.py's folder) takes 0.10-0.15 s of CPU with
    # the cycle collector on, 0.03 s with it paused: the notes hold no references, so
    # pausing it here is safe.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for voice, (s_l, p_l, d_l, v_l) in zip(piece.voices, columns):
            voice.notes = list(map(Note, p_l, s_l, d_l, v_l))
    finally:
        if was_enabled:
            gc.enable()


def _lexsort(keys) -> np.ndarray:
    """``np.lexsort(keys)`` (last key primary, ties in input order) for non-negative integer
    keys: one stable argsort of a combined key when the keys fit in 63 bits (several times
    faster), else lexsort itself."""
    total = 1
    spans = []
    for k in keys:
        if len(k) == 0 or int(k.min()) < 0:
            return np.lexsort(keys)
        spans.append(int(k.max()) + 1)
        total *= spans[-1]
    if total >= 1 << 63:
        return np.lexsort(keys)
    combined = np.zeros(len(keys[0]), np.int64)
    for k, span in zip(reversed(keys), reversed(spans)):
        combined *= span
        combined += k
    return np.argsort(combined, kind="stable")


def _resolve_overlaps(qs, qe, pitches, vels, vidx):
    """Within a voice, two notes of one pitch never sound at once: of notes starting together
    the longest stays; an earlier note is cut where the next one of its pitch starts."""
    if len(qs) == 0:
        return qs, qe, pitches, vels, vidx
    order = _lexsort((qe.max() - qe, qs, pitches, vidx))  # qe descending
    qs, qe, pitches, vels, vidx = qs[order], qe[order], pitches[order], vels[order], vidx[order]
    same = (vidx[1:] == vidx[:-1]) & (pitches[1:] == pitches[:-1])
    dup = np.concatenate([[False], same & (qs[1:] == qs[:-1])])
    keep = ~dup
    qs, qe, pitches, vels, vidx = qs[keep], qe[keep], pitches[keep], vels[keep], vidx[keep]
    same = (vidx[1:] == vidx[:-1]) & (pitches[1:] == pitches[:-1])
    cut = same & (qe[:-1] > qs[1:])
    qe = qe.copy()
    qe[:-1][cut] = qs[1:][cut]
    return qs, qe, pitches, vels, vidx


# ---- quantization -------------------------------------------------------------------------


def _grid_step(grid: int) -> int:
    whole = 4 * TPQ
    if not isinstance(grid, (int, np.integer)) or grid < 1 or whole % grid:
        raise UserError(
            f"grid {grid!r}: must be a whole number of notes per whole note dividing {whole} "
            "(e.g. 8, 16, 32, 12 for triplet eighths)"
        )
    return whole // int(grid)


def _triplet_step(grid: int | None, step: int) -> int | None:
    """The triplet grid offered beside a straight one, per beat: triplet eighths for 1/16 and
    1/8, triplet sixteenths for 1/32. None when the grid is already ternary or too coarse."""
    if grid is None or grid % 3 == 0:
        return None
    for num, den in ((4, 3), (2, 3)):
        t = step * num
        if t % den == 0 and TPQ % (t // den) == 0 and t // den < TPQ:
            return t // den
    return None


def quantize(piece: Piece, grid: int = 16, triplets: bool = True) -> Piece:
    """A copy of ``piece`` with onsets and ends on the grid (``grid`` notes per whole note).

    Per voice and beat, the triplet grid is used instead when the notes fit it clearly better.
    Notes that would vanish get one grid step; same-pitch overlaps are resolved; voices left
    without notes are dropped. Tempo and meter changes snap to the grid."""
    step = _grid_step(grid)
    tstep = _triplet_step(grid, step) if triplets else None
    out = Piece(
        voices=[Voice(program=v.program, name=v.name, drum=v.drum) for v in piece.voices],
        tempos=_snap_events(sorted(piece.tempos, key=lambda t: t.tick), step),
        meters=_snap_events(sorted(piece.meters, key=lambda m: m.tick), step),
        key=piece.key,
        anacrusis=int(round(piece.anacrusis / step)) * step,
        title=piece.title,
        tpq=TPQ,
    )
    scale = TPQ / piece.tpq
    notes = [(i, n) for i, v in enumerate(piece.voices) for n in v.notes]
    if not notes:
        out.voices = []
        return out
    vidx = np.fromiter((i for i, _ in notes), np.int64, len(notes))
    starts = np.fromiter((n.start for _, n in notes), np.float64, len(notes)) * scale
    ends = starts + np.fromiter((n.duration for _, n in notes), np.float64, len(notes)) * scale
    pitches = np.fromiter((n.pitch for _, n in notes), np.int64, len(notes))
    vels = np.fromiter((n.velocity for _, n in notes), np.int64, len(notes))
    qs, qe = _quantize_arrays(starts, ends, vidx, step, tstep, tol=0.5 * scale)
    _make_notes(out, _fill_voices(out, qs, qe, pitches, vels, vidx))
    return out


def _snap(x: np.ndarray, step: int) -> np.ndarray:
    return np.floor(x / step + 0.5).astype(np.int64) * step


def _fine_steps(step: int, tstep: int | None) -> list[int]:
    """Grids, coarsest first, that notes written from notation may sit on exactly: the grid,
    its triplet, and their halves, quarters and eighths down to 1/128 (each dividing a beat)."""
    out = []
    t = tstep or 0
    for g in (step, t, step // 2, t // 2, step // 4, t // 4, step // 8, t // 8):
        if g and g >= TPQ // 32 and TPQ % g == 0 and g not in out:
            out.append(g)
    if step not in out:
        out.insert(0, step)
    return out


def _exact_grid(x: np.ndarray, steps: list[int], tol: float, rel: float = 0.0) -> np.ndarray:
    """For each value, the coarsest of ``steps`` it lies on within ``tol`` ticks, or within
    ``rel`` of that grid's step when larger (0: none)."""
    found = np.zeros(len(x), np.int64)
    for g in reversed(steps):  # coarser grids overwrite finer ones
        found[_dist(x, g) <= max(tol / g, rel)] = g
    return found


def _is_notated(starts, step: int, tol: float, tstep: int | None = None) -> bool:
    """True when (nearly) every onset sits exactly on a straight or triplet grid down to
    1/128: a file written from notation, whose onsets need no estimate and no snapping."""
    if len(starts) == 0:
        return True
    tstep = tstep or (step * 4 // 3 if TPQ % max(step * 4 // 3, 1) == 0 else step * 2 // 3)
    return float(np.mean(_exact_grid(starts[:20000], _fine_steps(step, tstep), tol) > 0)) >= 0.98


def _micro_offset(starts, step: int) -> float:
    """The common tiny displacement (at most 1/32 of a grid step, a few milliseconds) of the
    onsets near the grid, or 0.0."""
    r = starts[:20000] - _snap(starts[:20000], step)
    near = np.abs(r) < step / 8
    if near.sum() < max(4, len(r) // 2):
        return 0.0
    m = _median(r[near])
    return m if abs(m) <= step / 32 else 0.0


def _quantize_arrays(
    starts, ends, vidx, step: int, tstep: int | None, tol: float = 0.5, notated: bool | None = None
):
    """Snap onsets and ends (float ticks) to the straight grid, or, per voice and beat, to the
    triplet grid where the onsets there sit clearly closer to it. In a file written from
    notation (``_is_notated``) a time that lies exactly on a finer grid (down to 1/128) keeps
    its place. Returns int64 arrays with every end at least one step after its onset."""
    qs_s = _snap(starts, step)
    qe_s = _snap(ends, step)
    if tstep is None or len(starts) == 0:
        qs, qe = qs_s, qe_s
        min_len = np.full(len(starts), step, np.int64)
    else:
        qs_t = _snap(starts, tstep)
        qe_t = _snap(ends, tstep)
        nbeats = int(max(starts.max(), ends.max()) // TPQ) + 2
        sb = np.clip((starts // TPQ).astype(np.int64), 0, nbeats - 1) + vidx * nbeats
        eb = np.clip((ends // TPQ).astype(np.int64), 0, nbeats - 1) + vidx * nbeats
        size = (int(vidx.max()) + 1) * nbeats
        # Errors summed per (voice, beat); ends count a quarter as much as onsets (performed
        # ends are loose) and decide only beats that have no onsets of their own.
        err_s = np.bincount(sb, np.abs(starts - qs_s), size) + 0.25 * np.bincount(
            eb, np.abs(ends - qe_s), size
        )
        err_t = np.bincount(sb, np.abs(starts - qs_t), size) + 0.25 * np.bincount(
            eb, np.abs(ends - qe_t), size
        )
        use_t = (err_t * 2.0 < err_s) & (err_s > 1e-6)
        ts, te = use_t[sb], use_t[eb]
        qs = np.where(ts, qs_t, qs_s)
        qe = np.where(te, qe_t, qe_s)
        min_len = np.where(ts, tstep, step).astype(np.int64)
    if notated is None:
        notated = _is_notated(starts, step, tol, tstep)
    if len(starts) and notated:
        steps = _fine_steps(step, tstep)
        # onsets exactly on a finer grid keep their place; ends (abc2midi and others shorten
        # notes a little) go to the coarsest grid within a sixteenth of its step
        for x, q, rel in ((starts, qs, 0.0), (ends, qe, 0.0625)):
            g = _exact_grid(x, steps, tol, rel)
            fine = g > 0
            q[fine] = np.floor(x[fine] / g[fine] + 0.5).astype(np.int64) * g[fine]
        min_len = np.where(qs % step == 0, min_len, np.minimum(min_len, steps[-1]))
    qs = np.maximum(qs, 0)
    qe = np.where(qe <= qs, qs + min_len, qe)
    return qs, qe


def _median(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty 1-d array without NaNs (np.median's first call
    imports numpy.ma, 16 ms)."""
    n = len(x)
    part = np.partition(x, [(n - 1) // 2, n // 2])
    return float((part[(n - 1) // 2] + part[n // 2]) / 2)


def _dist(x: np.ndarray, g: float) -> np.ndarray:
    """Distance of each value to the nearest multiple of ``g``, in units of ``g`` (0..0.5)."""
    r = x / g + 0.5
    r -= np.floor(r)  # r mod 1, exactly as np.remainder(r, 1.0) but several times faster
    r -= 0.5
    return np.abs(r, out=r)


def estimate_shift(starts: np.ndarray, step: int, tstep: int | None = None) -> float:
    """Ticks of constant lead-in to remove so the onsets sit on the grid and the music starts
    in the first beat; 0.0 when the onsets already sit on the grid or no shift puts them
    clearly closer."""
    on = np.sort(np.asarray(starts, np.float64).ravel())
    if len(on) < 4:
        return 0.0
    on = on[np.concatenate(([True], on[1:] != on[:-1]))]  # np.unique, which imports numpy.ma
    if len(on) < 4:
        return 0.0
    on = on[:600]  # a constant lead-in shows in the first few hundred onsets

    def off_grid(x):  # distance (in grid steps) to the nearest straight or triplet point
        d = _dist(x, step)
        return d if tstep is None else np.minimum(d, _dist(x, tstep))

    if np.mean(off_grid(on) < 0.02) >= 0.9:
        return 0.0
    # Cost of each candidate shift: distance to the grid, with coarser levels (eighths, beats)
    # weighing in so that a shift of a whole grid step is not mistaken for the right one.
    cands = np.arange(-TPQ / 2, TPQ / 2, TPQ / 96.0)
    x = on[None, :] - cands[:, None]
    cost = off_grid(x).mean(axis=1)
    for level, w in ((2 * step, 0.5), (TPQ, 0.25)):
        if level <= TPQ:
            cost += w * _dist(x, level).mean(axis=1)
    # Music mostly begins on a beat: a light preference for shifts that put the first onset
    # there settles what the statistics leave open (e.g. melodies with little beat structure).
    cost += 0.1 * _dist(on[0] - cands, TPQ)
    best = int(np.argmin(cost))
    zero = int(np.argmin(np.abs(cands)))
    shift = 0.0
    if cost[best] <= cost[zero] - 0.02:
        shift = float(cands[best])
        # Refine: the median residual of onsets near the grid at that shift.
        r = on - shift
        res = r - _snap(r, step)
        near = np.abs(res) < step * 0.25
        if near.any():
            shift += _median(res[near])
    # The phase is known modulo a beat; whole beats of silence before the first note are part
    # of the lead-in too (a file from notation, which may open with rests, never gets here).
    shift += np.floor((on[0] - shift + TPQ / 8) / TPQ) * TPQ
    return float(shift)


def _snap_events(events, step: int):
    out = []
    for e in events:
        tick = int(round(e.tick / step)) * step
        e = dataclasses.replace(e, tick=tick)
        if out and out[-1].tick == tick:
            out[-1] = e
        else:
            out.append(e)
    return out


# ---- writing ------------------------------------------------------------------------------


def write_midi(piece: Piece, path: str | Path | None = None) -> bytes:
    """Encode ``piece`` as a type 1 MIDI file: a conductor track (title, tempo, meter, key)
    then one track per voice named after it (or its GM instrument), with its program change;
    drum voices on channel 10, others on the remaining channels in turn. Written atomically to
    ``path`` when given; the bytes are returned either way."""
    tracks = [_conductor_track(piece)]
    melodic = [c for c in range(16) if c != DRUM_CHANNEL]
    k = 0
    for v in piece.voices:
        if v.drum:
            ch = DRUM_CHANNEL
        else:
            ch = melodic[k % len(melodic)]
            k += 1
        tracks.append(_voice_track(v, ch))
    out = bytearray(b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), piece.tpq))
    for t in tracks:
        out += b"MTrk" + struct.pack(">I", len(t)) + t
    data = bytes(out)
    if path is not None:
        atomic_write(path, data)
    return data


def _varlen(n: int) -> bytes:
    buf = [n & 0x7F]
    n >>= 7
    while n:
        buf.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(buf))


def _meta(kind: int, payload: bytes) -> bytes:
    return bytes((0xFF, kind)) + _varlen(len(payload)) + payload


def _encode(events: list[tuple[int, int, bytes]]) -> bytes:
    """Events (tick, order, bytes) to a track body with delta times and an end-of-track."""
    events.sort(key=lambda e: (e[0], e[1]))
    out = bytearray()
    last = 0
    for tick, _, msg in events:
        out += _varlen(tick - last)
        out += msg
        last = tick
    out += b"\x00\xff\x2f\x00"
    return bytes(out)


def _conductor_track(piece: Piece) -> bytes:
    ev: list[tuple[int, int, bytes]] = []
    if piece.title:
        ev.append((0, 0, _meta(0x03, piece.title.encode("utf-8"))))
    for m in piece.meters:
        dd = max(0, int(m.denominator).bit_length() - 1)
        ev.append((m.tick, 1, _meta(0x58, bytes((m.numerator & 0xFF, dd, 24, 8)))))
    if piece.key is not None:
        k = piece.key
        minor = k.mode in ("minor", "aeolian")
        ev.append((0, 2, _meta(0x59, struct.pack(">bB", max(-7, min(7, k.fifths)), int(minor)))))
    for t in piece.tempos:
        us = max(1, min(0xFFFFFF, int(round(60_000_000.0 / t.bpm))))
        ev.append((t.tick, 3, _meta(0x51, us.to_bytes(3, "big"))))
    return _encode(ev)


def _voice_track(v: Voice, ch: int) -> bytes:
    name = v.name or program_name(v.program, v.drum)
    ev: list[tuple[int, int, bytes]] = [(0, 0, _meta(0x03, name.encode("utf-8")))]
    if not v.drum:
        ev.append((0, 1, bytes((0xC0 | ch, v.program & 0x7F))))
    on, off = 0x90 | ch, 0x80 | ch
    for n in v.notes:
        p = n.pitch & 0x7F
        ev.append((n.start, 3, bytes((on, p, max(1, min(127, n.velocity))))))
        ev.append((n.start + max(1, n.duration), 2, bytes((off, p, 64))))
    return _encode(ev)
