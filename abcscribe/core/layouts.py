"""Dataset layouts that pair recordings with scores: a folder of files sharing stems, URMP,
Slakh2100, MAESTRO's CSV, and a manifest JSONL. Each yields ``Source``s in a fixed order; a file
that cannot be paired becomes a Source carrying an error, so the batch reports it and goes on."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from abcscribe.core import gm
from abcscribe.core.errors import UserError
from abcscribe.core.files import ABC_EXTS, AUDIO_EXTS, MIDI_EXTS, BadLine, read_jsonl
from abcscribe.core.notes import Piece

LAYOUTS = ("auto", "pairs", "urmp", "slakh", "maestro", "manifest")

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


# ---- detection ---------------------------------------------------------------------------------


def detect_layout(path: Path) -> str:
    """The layout of ``path``: a .jsonl file is a manifest, a .csv file MAESTRO's list; a folder
    with a MAESTRO CSV, URMP's ``AuMix_*`` mixes or Slakh's ``all_src.mid`` is that dataset;
    any other folder (or a single file) is paired by stem."""
    if path.is_file():
        suf = path.suffix.lower()
        if suf == ".jsonl":
            return "manifest"
        if suf == ".csv":
            return "maestro"
        return "pairs"
    if _maestro_csv(path) is not None:
        return "maestro"
    for _root, _dirs, files in os.walk(path):
        for f in files:
            if f.startswith("AuMix_") or (f.startswith("Sco_") and f.lower().endswith(".mid")):
                return "urmp"
            if f == "all_src.mid":
                return "slakh"
    return "pairs"


def sources(path: str | Path, layout: str = "auto") -> list[Source]:
    """The Sources found at ``path`` under ``layout`` (``auto`` detects it). A missing path or
    a layout that does not fit is a UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    if layout not in LAYOUTS:
        raise UserError(f"--layout: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if layout == "auto":
        layout = detect_layout(p)
    if layout == "pairs":
        return pair_sources(p)
    if layout == "urmp":
        return urmp_sources(_need_dir(p, layout))
    if layout == "slakh":
        return slakh_sources(_need_dir(p, layout))
    if layout == "maestro":
        csv_path = p if p.is_file() else _maestro_csv(p)
        if csv_path is None:
            raise UserError(f"{p}: no MAESTRO CSV (with midi_filename and audio_filename) in it")
        return maestro_sources(csv_path)
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
    """One Source per URMP piece folder: the mix ``AuMix_*.wav``, the score ``Sco_*.mid``,
    instruments from the folder name (``01_Jupiter_vn_vc``: violin, cello)."""
    folders: dict[Path, dict[str, list[Path]]] = {}
    for f in _files(root):
        kind = "audio" if f.name.startswith("AuMix_") and f.suffix.lower() in AUDIO_EXTS else (
            "score" if f.name.startswith("Sco_") and f.suffix.lower() in MIDI_EXTS else None)
        if kind:
            folders.setdefault(f.parent, {"audio": [], "score": []})[kind].append(f)
    out = []
    for d in sorted(folders, key=lambda q: q.relative_to(root).parts):
        got = folders[d]
        pid = d.relative_to(root).as_posix() if d != root else d.name
        a = _pick_audio(got["audio"]) if got["audio"] else None
        s = sorted(got["score"])[0] if got["score"] else None
        src = Source(pid, a, s, title=d.name, instruments=urmp_instruments(d.name), layout="urmp")
        if s is None:
            src.error = f"{d}: no Sco_*.mid score for this URMP piece"
        out.append(src)
    return out


# ---- Slakh2100 ---------------------------------------------------------------------------------


def slakh_instruments(metadata: Path) -> list[tuple[int, bool]] | None:
    """(program, drum) of the stems whose MIDI was saved, in stem order, from ``metadata.yaml``."""
    import yaml

    try:
        meta = yaml.safe_load(metadata.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{metadata}: unreadable metadata ({str(e).splitlines()[0]})") from None
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(stems, dict):
        return None
    out = []
    for name in sorted(stems):
        st = stems[name] or {}
        if st.get("midi_saved") is False:
            continue
        drum = bool(st.get("is_drum", False))
        prog = st.get("program_num")
        if not isinstance(prog, int):
            prog = gm.program_number(str(st.get("midi_program_name", ""))) or 0
        out.append((max(0, min(127, prog)), drum))
    return out or None


def slakh_sources(root: Path) -> list[Source]:
    """One Source per Slakh track folder: ``mix.flac`` (or .wav), ``all_src.mid``, instruments
    from ``metadata.yaml``."""
    tracks: dict[Path, dict[str, Path]] = {}
    for f in _files(root):
        if f.stem == "mix" and f.suffix.lower() in AUDIO_EXTS:
            cur = tracks.setdefault(f.parent, {})
            if "audio" not in cur or _rank(f.suffix.lower()) < _rank(cur["audio"].suffix.lower()):
                cur["audio"] = f
        elif f.name == "all_src.mid":
            tracks.setdefault(f.parent, {})["score"] = f
        elif f.name == "metadata.yaml" and (f.parent / "all_src.mid").exists():
            tracks.setdefault(f.parent, {})["meta"] = f
    out = []
    for d in sorted(tracks, key=lambda q: q.relative_to(root).parts):
        got = tracks[d]
        pid = d.relative_to(root).as_posix() if d != root else d.name
        src = Source(pid, got.get("audio"), got.get("score"), title=d.name, layout="slakh")
        if "meta" in got:
            try:
                src.instruments = slakh_instruments(got["meta"])
            except UserError as e:
                src.notes.append(str(e))
        if src.score is None:
            src.error = f"{d}: no all_src.mid in this Slakh track"
        out.append(src)
    return out


# ---- MAESTRO -----------------------------------------------------------------------------------


def _maestro_csv(folder: Path) -> Path | None:
    for f in sorted(folder.glob("*.csv")):
        try:
            with open(f, encoding="utf-8", newline="") as fh:
                head = fh.readline()
        except OSError:
            continue
        if "midi_filename" in head and "audio_filename" in head:
            return f
    return None


def maestro_sources(csv_path: Path) -> list[Source]:
    """One Source per row of MAESTRO's CSV (``midi_filename``, ``audio_filename`` relative to
    the CSV's folder; ``canonical_title``); every piece is a piano."""
    base = csv_path.parent
    try:
        with open(csv_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{csv_path}: unreadable CSV ({e})") from None
    if rows and not {"midi_filename", "audio_filename"} <= set(rows[0]):
        raise UserError(f"{csv_path}: not a MAESTRO CSV (needs midi_filename and audio_filename)")
    out = []
    for i, row in enumerate(rows, 2):
        midi, audio = (row.get("midi_filename") or "").strip(), (row.get("audio_filename") or "").strip()
        pid = str(Path(midi or audio or f"row{i}").with_suffix("").as_posix())
        src = Source(pid, base / audio if audio else None, base / midi if midi else None,
                     title=(row.get("canonical_title") or "").strip(), instruments=[(0, False)],
                     layout="maestro")
        if not midi:
            src.error = f"{csv_path}:{i}: no midi_filename"
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
