"""Dataset layouts that pair recordings with scores: a folder of files sharing stems, URMP,
Slakh2100, MAESTRO (its CSV or JSON metadata), and a manifest JSONL. Each yields ``Source``s in
a fixed order; a piece that cannot be paired (a missing mix, stem or metadata) becomes a Source
carrying an error, so the batch reports it and goes on. ``load_piece`` reads a Source's notes
the way its dataset means them: Slakh's rendered stems, URMP's aligned note annotations,
MAESTRO's performances with the sustain pedal and their tracked beats."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from abcscribe.core import gm
from abcscribe.core.errors import UserError
from abcscribe.core.files import ABC_EXTS, AUDIO_EXTS, MIDI_EXTS, BadLine, read_jsonl
from abcscribe.core.notes import TPQ, Note, Piece, Voice

LAYOUTS = ("auto", "pairs", "urmp", "slakh", "maestro", "manifest")
SLAKH_AUDIO = ("mix", "stems", "both")

# The datasets' own split names, as our split files are named.
OFFICIAL_SPLITS = {"train": "train", "validation": "val", "test": "test"}

# When a stem has several recordings, the first of these is taken.
_AUDIO_PREFERENCE = (".wav", ".flac", ".aiff", ".aif", ".ogg", ".mp3", ".m4a")

# URMP folder names end in instrument codes: 01_Jupiter_vn_vc, 12_Spring_vn_vn_vc.
URMP_CODES = {
    "vn": "Violin", "va": "Viola", "vc": "Cello", "db": "Contrabass", "fl": "Flute",
    "ob": "Oboe", "cl": "Clarinet", "sax": "Soprano Sax", "bn": "Bassoon", "tpt": "Trumpet",
    "hn": "French Horn", "tbn": "Trombone", "tba": "Tuba",
}


@dataclass
class Source:
    """One piece to make clips of: its id (used for the split and record ids), its recording
    (None: to be rendered), its score (MIDI or ABC), and what the layout knows about it."""

    id: str
    audio: Path | None
    score: Path | None
    title: str = ""
    # (GM program, drum) per voice in order, when the layout names the instruments
    instruments: list[tuple[int, bool]] | None = None
    error: str | None = None
    layout: str = "pairs"
    notes: list[str] = field(default_factory=list)  # non-fatal remarks (warnings)
    split: str | None = None  # the dataset's own split (train, val, test); None: by hash
    stems: list[Stem] | None = None  # Slakh: every stem of the track (the notes' source)
    note_files: list[tuple[Path, int]] | None = None  # URMP: (Notes_*.txt, GM program) per part
    performance: bool = False  # MAESTRO: the MIDI is a performance (pedals, no real tempo)


@dataclass
class Stem:
    """One Slakh stem as ``metadata.yaml`` describes it, with its files when they exist."""

    name: str  # S00, S01, ...
    program: int
    drum: bool
    rendered: bool  # audio_rendered: the stem sounds in mix.flac
    audio: Path | None = None  # stems/Sxx.flac
    midi: Path | None = None  # MIDI/Sxx.mid


# ---- detection ---------------------------------------------------------------------------------


def detect_layout(path: Path) -> str:
    """The layout of ``path``: a .jsonl file is a manifest, a .csv or .json file MAESTRO's list;
    a folder with MAESTRO's metadata, URMP's ``AuMix_*`` mixes or Slakh's ``all_src.mid`` is
    that dataset; any other folder (or a single file) is paired by stem."""
    if path.is_file():
        suf = path.suffix.lower()
        if suf == ".jsonl":
            return "manifest"
        if suf in (".csv", ".json"):
            return "maestro"
        return "pairs"
    if _maestro_metadata(path) is not None:
        return "maestro"
    for _root, _dirs, files in os.walk(path):
        for f in files:
            if f.startswith("AuMix_") or (f.startswith("Sco_") and f.lower().endswith(".mid")):
                return "urmp"
            if f == "all_src.mid":
                return "slakh"
    return "pairs"


def sources(path: str | Path, layout: str = "auto", slakh_audio: str = "mix") -> list[Source]:
    """The Sources found at ``path`` under ``layout`` (``auto`` detects it); for Slakh,
    ``slakh_audio`` chooses clips of the mix, of each rendered stem, or both. A missing path or
    a layout that does not fit is a UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    if layout not in LAYOUTS:
        raise UserError(f"--layout: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if slakh_audio not in SLAKH_AUDIO:
        raise UserError(f"--slakh-audio: expected mix, stems or both, got {slakh_audio!r}")
    if layout == "auto":
        layout = detect_layout(p)
    if layout == "pairs":
        return pair_sources(p)
    if layout == "urmp":
        return urmp_sources(_need_dir(p, layout))
    if layout == "slakh":
        return slakh_sources(_need_dir(p, layout), slakh_audio)
    if layout == "maestro":
        meta = p if p.is_file() else _maestro_metadata(p)
        if meta is None:
            raise UserError(f"{p}: no MAESTRO metadata (a CSV or JSON with midi_filename and "
                            "audio_filename) in it")
        return maestro_sources(meta)
    if not p.is_file():
        raise UserError(f"{p}: a manifest is a JSONL file")
    return manifest_sources(p)


def _need_dir(p: Path, layout: str) -> Path:
    if not p.is_dir():
        raise UserError(f"{p}: the {layout} layout is a folder")
    return p


def _files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted by its relative path (hidden files left out)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        out.extend(Path(d) / f for f in files if not f.startswith("."))
    return sorted(out, key=lambda q: q.relative_to(root).parts)


def _pick_audio(paths: list[Path]) -> Path:
    return min(paths, key=lambda q: (_rank(q.suffix.lower()), q.name))


def _rank(suffix: str) -> int:
    return _AUDIO_PREFERENCE.index(suffix) if suffix in _AUDIO_PREFERENCE else len(_AUDIO_PREFERENCE)


# ---- a folder of files sharing stems -----------------------------------------------------------


def pair_sources(root: Path) -> list[Source]:
    """Recordings and scores (MIDI, else ABC) sharing a path without suffix
    (``a/tune.wav`` + ``a/tune.mid``); what is left pairs by bare stem when that is unique
    (``audio/tune.wav`` + ``midi/tune.mid``). A recording without a score, or a score
    without a recording, is a Source with ``audio`` or ``score`` None and an error for the
    former (the caller renders the latter or reports it)."""
    if root.is_file():
        files, base = [root], root.parent
    else:
        files, base = _files(root), root
    audio: dict[str, list[Path]] = {}
    scores: dict[str, list[Path]] = {}
    for f in files:
        suf = f.suffix.lower()
        key = f.relative_to(base).with_suffix("").as_posix()
        if suf in AUDIO_EXTS:
            audio.setdefault(key, []).append(f)
        elif suf in MIDI_EXTS or suf in ABC_EXTS:
            scores.setdefault(key, []).append(f)

    def best_score(paths: list[Path]) -> Path:
        return min(paths, key=lambda q: (q.suffix.lower() not in MIDI_EXTS, q.name))

    out: dict[str, Source] = {}
    for key in sorted(set(audio) & set(scores)):
        out[key] = Source(key, _pick_audio(audio[key]), best_score(scores[key]))
    lone_audio = {k: v for k, v in audio.items() if k not in scores}
    lone_scores = {k: v for k, v in scores.items() if k not in audio}
    # second chance: the same bare stem in different folders, when it is unambiguous
    by_stem_a: dict[str, list[str]] = {}
    for k in lone_audio:
        by_stem_a.setdefault(k.rsplit("/", 1)[-1], []).append(k)
    by_stem_s: dict[str, list[str]] = {}
    for k in lone_scores:
        by_stem_s.setdefault(k.rsplit("/", 1)[-1], []).append(k)
    for stem in sorted(set(by_stem_a) & set(by_stem_s)):
        if len(by_stem_a[stem]) == 1 and len(by_stem_s[stem]) == 1:
            ka, ks = by_stem_a[stem][0], by_stem_s[stem][0]
            out[ks] = Source(ks, _pick_audio(lone_audio.pop(ka)), best_score(lone_scores.pop(ks)))
    for k, v in lone_scores.items():
        out[k] = Source(k, None, best_score(v))
    for k, v in lone_audio.items():
        a = _pick_audio(v)
        out[k] = Source(k, a, None, error=f"{a}: no MIDI or ABC file shares its stem")
    return [out[k] for k in sorted(out)]


# ---- URMP --------------------------------------------------------------------------------------

# Notes_<part>_<code>_<no>_<name>.txt: one part's notes, aligned with the recording.
_URMP_NOTES = re.compile(r"^Notes_(\d+)_([A-Za-z]+)_.*\.txt$")


def urmp_instruments(folder_name: str) -> list[tuple[int, bool]] | None:
    """GM programs from a URMP folder name's trailing instrument codes, or None."""
    codes = []
    for tok in reversed(folder_name.split("_")):
        if tok.lower() not in URMP_CODES:
            break
        codes.append(tok.lower())
    if not codes:
        return None
    return [(gm.program_number(URMP_CODES[c]), False) for c in reversed(codes)]


def urmp_sources(root: Path) -> list[Source]:
    """One Source per URMP piece folder: the mix ``AuMix_*.wav``; its notes from the parts'
    aligned annotations ``Notes_<n>_<code>_*.txt`` when present (the score ``Sco_*.mid`` is
    not aligned with the recording, so it is only the fallback, with a warning); instruments
    from the folder name (``01_Jupiter_vn_vc``: violin, cello). URMP documents no split: pieces
    are split by a hash of their folder."""
    folders: dict[Path, dict[str, list[Path]]] = {}
    for f in _files(root):
        suf = f.suffix.lower()
        kind = ("audio" if f.name.startswith("AuMix_") and suf in AUDIO_EXTS else
                "score" if f.name.startswith("Sco_") and suf in MIDI_EXTS else
                "notes" if _URMP_NOTES.match(f.name) else None)
        if kind:
            folders.setdefault(f.parent, {"audio": [], "score": [], "notes": []})[kind].append(f)
    out = []
    for d in sorted(folders, key=lambda q: q.relative_to(root).parts):
        got = folders[d]
        pid = d.relative_to(root).as_posix() if d != root else d.name
        a = _pick_audio(got["audio"]) if got["audio"] else None
        s = sorted(got["score"])[0] if got["score"] else None
        inst = urmp_instruments(d.name)
        src = Source(pid, a, s, title=d.name, instruments=inst, layout="urmp")
        parts = sorted((int(m.group(1)), m.group(2).lower(), f) for f in got["notes"]
                       for m in [_URMP_NOTES.match(f.name)])
        if a is None:
            src.error = f"{d}: no AuMix_* recording for this URMP piece"
        elif parts:
            n_parts = len(inst) if inst else len(parts)
            unknown = [f.name for _, code, f in parts if code not in URMP_CODES]
            if unknown:
                src.error = f"{d}: unknown instrument code in {unknown[0]}"
            elif [n for n, _, _ in parts] != list(range(1, n_parts + 1)):
                src.error = (f"{d}: Notes_*.txt for parts {[n for n, _, _ in parts]} of "
                             f"{n_parts}; the recording's other parts would have no notes")
            else:
                src.note_files = [(f, gm.program_number(URMP_CODES[code])) for _, code, f in parts]
        elif s is None:
            src.error = f"{d}: no Notes_*.txt and no Sco_*.mid for this URMP piece"
        else:
            src.notes.append(f"{pid}: no Notes_*.txt; notes from {s.name}, a score not "
                             "aligned with the recording")
        out.append(src)
    return out


def read_urmp_notes(path: Path, program: int) -> Voice:
    """One part's notes from a URMP ``Notes_*.txt`` (per line: onset in seconds, pitch, duration
    in seconds) as a voice whose ticks are seconds (``beats.seconds_piece``). The pitch column
    is read as Hz, or as MIDI numbers when every value is a whole number up to 127."""
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [[float(x) for x in r[:3]] for r in rows if r and not r[0].startswith("#")]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: unreadable note annotations ({e})") from None
    if not rows or any(len(r) < 3 for r in rows):
        raise UserError(f"{path}: expected lines of onset, pitch and duration")
    pitches = [r[1] for r in rows]
    midi_numbers = all(p == int(p) and 0 <= p <= 127 for p in pitches)
    voice = Voice(program=program)
    for onset, pitch, dur in rows:
        if pitch <= 0 or dur <= 0:
            continue
        key = int(pitch) if midi_numbers else int(round(69 + 12 * math.log2(pitch / 440.0)))
        s = int(round(onset * TPQ))
        voice.notes.append(Note(max(0, min(127, key)), max(0, s), max(1, int(round(dur * TPQ)))))
    return voice


# ---- Slakh2100 ---------------------------------------------------------------------------------


def slakh_stems(track: Path) -> list[Stem]:
    """The stems of a Slakh track from its ``metadata.yaml`` (``program_num``, 128 for drums,
    ``is_drum``, ``audio_rendered``), in stem order, with ``stems/Sxx.*`` and ``MIDI/Sxx.mid``
    where they exist. UserError when the metadata is missing or unreadable."""
    import yaml

    metadata = track / "metadata.yaml"
    try:
        meta = yaml.safe_load(metadata.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{track}: no metadata.yaml, so which stems the mix holds is "
                        "unknown") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{metadata}: unreadable metadata ({str(e).splitlines()[0]})") from None
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(stems, dict) or not stems:
        raise UserError(f"{metadata}: no 'stems' in the metadata")
    out = []
    for name in sorted(stems):
        st = stems[name] if isinstance(stems[name], dict) else {}
        drum = bool(st.get("is_drum", False))
        prog = st.get("program_num")
        if not isinstance(prog, int) or not 0 <= prog <= 127:
            prog = 0 if drum else gm.program_number(str(st.get("midi_program_name", "")))
        if prog is None:
            raise UserError(f"{metadata}: stem {name} has no usable program_num")
        audio = [f for f in sorted((track / "stems").glob(f"{name}.*")) if f.suffix.lower() in AUDIO_EXTS]
        midi = track / "MIDI" / f"{name}.mid"
        out.append(Stem(str(name), 0 if drum else prog, drum, st.get("audio_rendered") is not False,
                        _pick_audio(audio) if audio else None, midi if midi.is_file() else None))
    return out


def slakh_sources(root: Path, audio: str = "mix") -> list[Source]:
    """Slakh2100 tracks (``TrackNNNNN`` folders with ``all_src.mid``): a Source per track for its
    ``mix.flac`` (or .wav), and with ``audio`` stems or both, one per rendered stem for its
    ``stems/Sxx.flac``. The split is the track's folder (``train``, ``validation``, ``test``);
    ``omitted/`` (duplicates in the redux release) is skipped."""
    tracks: dict[Path, Path | None] = {}
    omitted = set()
    for f in _files(root):
        if f.parent.parent.name == "omitted":  # <split>/TrackNNNNN/: the folder above is the split
            omitted.add(f.parent)
            continue
        if f.name == "all_src.mid":
            tracks.setdefault(f.parent, None)
        elif f.stem == "mix" and f.suffix.lower() in AUDIO_EXTS:
            cur = tracks.get(f.parent)
            tracks[f.parent] = f if cur is None else _pick_audio([cur, f])
    out = []
    for d in sorted(tracks, key=lambda q: q.relative_to(root).parts):
        pid = d.relative_to(root).as_posix() if d != root else d.name
        split = OFFICIAL_SPLITS.get(d.parent.name)
        score = d / "all_src.mid"
        mix = Source(pid, tracks[d], score if score.is_file() else None, title=d.name,
                     layout="slakh", split=split)
        try:
            stems = slakh_stems(d)
        except UserError as e:
            mix.error = str(e)
            out.append(mix)
            continue
        mix.stems = stems
        if mix.score is None:
            mix.error = f"{d}: no all_src.mid in this Slakh track"
        elif mix.audio is None:
            mix.error = f"{d}: no mix.flac in this Slakh track"
        if audio in ("mix", "both"):
            out.append(mix)
        if audio in ("stems", "both"):
            for st in stems:
                if not st.rendered:
                    continue
                # the score stays all_src.mid (the tempo map); the notes are the stem's own
                src = Source(f"{pid}/{st.name}", st.audio, mix.score, title=f"{d.name} {st.name}",
                             layout="slakh", split=split, stems=[st])
                if mix.score is None:
                    src.error = mix.error
                elif st.audio is None:
                    src.error = f"{d}: stem {st.name} is rendered but stems/{st.name}.* is missing"
                elif st.midi is None:
                    src.error = f"{d}: stem {st.name} has no MIDI/{st.name}.mid"
                out.append(src)
    ok = [src for src in out if not src.error]
    if omitted and ok:  # said once, with the first piece that is made
        ok[0].notes.append(f"{root}: {len(omitted)} track(s) under omitted/ (duplicates) left out")
    return out


def slakh_piece(src: Source) -> tuple[Piece, list[str]]:
    """The notes a Slakh Source's audio holds, at raw timing: each rendered stem's own
    ``MIDI/Sxx.mid`` (all of them for the mix, its own for a stem) with the stem's instrument,
    on the tempo map of ``all_src.mid``. Without the stem MIDI, ``all_src.mid``'s voices are
    paired with stems by program and drum flag, never by position; a voice that could be a
    stem the mix does not hold, or that matches no stem, is a UserError."""
    import numpy as np

    from abcscribe.core.beats import to_seconds, to_ticks
    from abcscribe.core.midi import read_midi

    track = read_midi(src.score, grid=None, offset=0.0)
    wanted = [st for st in src.stems if st.rendered]
    remarks: list[str] = []
    voices: list[Voice] = []
    if all(st.midi is not None for st in wanted):
        for st in wanted:
            stem = read_midi(st.midi, grid=None, offset=0.0)
            for v in stem.voices:  # onto all_src.mid's ticks through the seconds they sound at
                on = np.array([n.start for n in v.notes], np.float64)
                off = np.array([n.end for n in v.notes], np.float64)
                s = np.rint(to_ticks(track, to_seconds(stem, on))).astype(np.int64).tolist()
                e = np.rint(to_ticks(track, to_seconds(stem, off))).astype(np.int64).tolist()
                notes = [Note(n.pitch, a, max(1, b - a), n.velocity)
                         for n, a, b in zip(v.notes, s, e)]
                voices.append(Voice(notes=notes, program=st.program, drum=st.drum, name=""))
    else:
        voices = _pair_by_instrument(track, src.stems, src.score)
    unheard = [st.name for st in src.stems if not st.rendered]
    if unheard and len(src.stems) > 1:
        remarks.append(f"{src.id}: stems {', '.join(unheard)} are not rendered (not in the mix); "
                       "their notes are left out")
    return Piece(voices=voices, tempos=track.tempos, meters=track.meters, key=track.key,
                 title=track.title), remarks


def _pair_by_instrument(track: Piece, stems: list[Stem], score: Path) -> list[Voice]:
    def key(prog: int, drum: bool) -> tuple:
        return ("drum",) if drum else ("program", prog)

    heard = {key(st.program, st.drum) for st in stems if st.rendered}
    unheard = {key(st.program, st.drum): st.name for st in stems if not st.rendered}
    voices = []
    for v in track.voices:
        k = key(v.program, v.drum)
        name = gm.program_name(v.program, v.drum)
        if k in heard and k in unheard:
            raise UserError(f"{score}: the {name} voice could be stem {unheard[k]}, which is not "
                            "in the mix; the stems' MIDI/*.mid are needed to tell")
        if k in heard:
            voices.append(Voice(notes=v.notes, program=v.program, drum=v.drum))
        elif k not in unheard:
            raise UserError(f"{score}: the {name} voice matches no stem in metadata.yaml")
    return voices


# ---- MAESTRO -----------------------------------------------------------------------------------


def _maestro_metadata(folder: Path) -> Path | None:
    """MAESTRO's metadata in ``folder``: the CSV (``maestro-v3.0.0.csv``), else the JSON
    (``maestro-v2.0.0.json``, ``maestro-v3.0.0.json``)."""
    for pattern in ("*.csv", "*.json"):
        for f in sorted(folder.glob(pattern)):
            try:
                with open(f, encoding="utf-8", newline="") as fh:
                    head = fh.read(4096)
            except (OSError, UnicodeDecodeError):
                continue
            if "midi_filename" in head and "audio_filename" in head:
                return f
    return None


def read_maestro_metadata(path: Path) -> list[dict]:
    """MAESTRO's rows (``canonical_composer``, ``canonical_title``, ``split``, ``year``,
    ``midi_filename``, ``audio_filename``, ``duration``) from its CSV, its v2 JSON (a list of
    rows) or its v3 JSON (a column per field, each mapping a row number to its value).
    UserError when unreadable or without the file columns."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and all(isinstance(c, dict) for c in data.values()):
                index = sorted({i for c in data.values() for i in c}, key=_row_number)
                rows = [{k: c.get(i) for k, c in data.items()} for i in index]
            elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
                rows = data
            else:
                raise ValueError("neither a list of rows nor a column per field")
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise UserError(f"{path}: unreadable MAESTRO metadata ({str(e).splitlines()[0]})") from None
    if not rows or not {"midi_filename", "audio_filename"} <= set(rows[0]):
        raise UserError(f"{path}: not MAESTRO metadata (needs midi_filename and audio_filename)")
    return rows


def _row_number(i: str):
    return (0, int(i)) if str(i).isdigit() else (1, str(i))


def maestro_sources(meta_path: Path) -> list[Source]:
    """One Source per MAESTRO performance (files relative to the metadata's folder); its split
    is the row's ``split`` (MAESTRO keeps each composition in one split); every piece is a
    piano. Unreadable metadata is one error Source."""
    base = meta_path.parent
    try:
        rows = read_maestro_metadata(meta_path)
    except UserError as e:
        return [Source(meta_path.name, None, None, error=str(e), layout="maestro")]
    out = []
    for i, row in enumerate(rows, 2 if meta_path.suffix.lower() == ".csv" else 1):
        midi = str(row.get("midi_filename") or "").strip()
        audio = str(row.get("audio_filename") or "").strip()
        pid = str(Path(midi or audio or f"row{i}").with_suffix("").as_posix())
        split = str(row.get("split") or "").strip()
        src = Source(pid, base / audio if audio else None, base / midi if midi else None,
                     title=str(row.get("canonical_title") or "").strip(),
                     instruments=[(0, False)], layout="maestro",
                     split=OFFICIAL_SPLITS.get(split), performance=True)
        if not midi:
            src.error = f"{meta_path}:{i}: no midi_filename"
        elif not audio:
            src.error = f"{meta_path}:{i}: no audio_filename"
        elif split and split not in OFFICIAL_SPLITS:
            src.error = f"{meta_path}:{i}: unknown split {split!r}"
        out.append(src)
    return out


# ---- manifest JSONL ----------------------------------------------------------------------------


def _resolve(value: str, base: Path) -> Path:
    q = Path(value)
    if q.is_absolute():
        return q
    alt = base / q
    return alt if alt.exists() or not q.exists() else q


def manifest_sources(manifest: Path) -> list[Source]:
    """One Source per manifest record: ``audio``, ``midi`` or ``abc`` (paths relative to the
    manifest's folder, or absolute), optional ``id``, ``title``, ``instruments`` (GM names,
    one per voice, or one for all)."""
    out = []
    base = manifest.parent
    for i, rec in enumerate(read_jsonl(manifest, bad="keep"), 1):
        if isinstance(rec, BadLine):  # that line's error record; the other lines go on
            out.append(Source(f"{manifest.stem}-line{rec['line']}", None, None,
                              layout="manifest", error=rec["error"]))
            continue
        score = rec.get("midi") or rec.get("abc")
        audio = rec.get("audio")
        pid = str(rec.get("id") or "")
        if not pid:
            stem_of = score or audio or f"record{i}"
            pid = Path(str(stem_of)).with_suffix("").as_posix()
        src = Source(pid, _resolve(audio, base) if isinstance(audio, str) and audio else None,
                     _resolve(score, base) if isinstance(score, str) and score else None,
                     title=str(rec.get("title") or ""), layout="manifest")
        if src.score is None:
            src.error = f"{manifest}:{i}: no 'midi' or 'abc' path"
        inst = rec.get("instruments")
        if isinstance(inst, str):
            inst = [s for s in re.split(r"\s*[,;]\s*", inst) if s]
        if isinstance(inst, list) and inst and src.error is None:
            progs = []
            for name in inst:
                if str(name).strip().lower() in ("drums", "drum kit", "drum", "percussion"):
                    progs.append((0, True))
                    continue
                p = gm.program_number(str(name))
                if p is None:
                    src.error = f"{manifest}:{i}: {name!r} is not a General MIDI instrument"
                    break
                progs.append((p, False))
            src.instruments = progs
        out.append(src)
    return out


# ---- reading a Source's notes ------------------------------------------------------------------


def load_piece(src: Source, grid: int | None = 16) -> tuple[Piece, list[str], str | None]:
    """The piece a Source's recording plays, quantized to ``grid`` (None: raw), remarks worth a
    warning, and how its beats were found when not from a score (``beats.TIMING``; tempo and
    metre then come from tracked beats, not the file). UserError when unreadable."""
    from abcscribe.core.midi import quantize

    remarks: list[str] = []
    if src.stems is not None:
        piece, remarks = slakh_piece(src)
    elif src.note_files is not None or src.performance:
        return _performance_piece(src, grid)
    else:
        from abcscribe.core.qa import read_score

        piece = read_score(src.score, grid)
        remark = name_instruments(piece, src.instruments)
        if remark:
            remarks.append(f"{src.id}: {remark}")
        return piece, remarks, None
    piece.voices = [v for v in piece.voices if v.notes]
    if piece.note_count == 0:
        raise UserError(f"{src.score}: no notes in the stems the audio holds")
    return (quantize(piece, grid) if grid else piece), remarks, None


def _performance_piece(src: Source, grid: int | None) -> tuple[Piece, list[str], str]:
    from abcscribe.core import beats
    from abcscribe.core.midi import quantize, read_midi

    if src.note_files is not None:
        played = beats.seconds_piece([read_urmp_notes(f, prog) for f, prog in src.note_files])
        what = "the aligned note annotations"
    else:
        # MAESTRO's file tempo (120 BPM) and 4/4 are placeholders: only its seconds are real
        played = read_midi(src.score, grid=None, offset=0.0, sustain=True)
        name_instruments(played, src.instruments)
        what = f"{src.score.name}"
    played.voices = [v for v in played.voices if v.notes]
    piece = beats.retime(played)
    if piece is None:
        raise UserError(f"{src.id}: too few notes in {what} to track a beat")
    return (quantize(piece, grid) if grid else piece), [], beats.TIMING


# ---- applying what a layout knows --------------------------------------------------------------


def name_instruments(piece: Piece, instruments: list[tuple[int, bool]] | None) -> str | None:
    """Give the piece's voices the layout's instruments: one per voice in order, or one for
    every voice. Returns a remark when the counts do not match (the score's own kept)."""
    if not instruments:
        return None
    voices = [v for v in piece.voices if v.notes]
    if len(instruments) == 1:
        pairs = [(v, instruments[0]) for v in voices]
    elif len(instruments) == len(voices):
        pairs = list(zip(voices, instruments))
    else:
        return (f"{len(instruments)} instruments named for {len(voices)} voices; "
                "keeping the score's own programs")
    for v, (prog, drum) in pairs:
        v.program, v.drum, v.name = prog, drum, ""
    return None
