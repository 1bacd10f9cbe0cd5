"""Miniature Slakh2100, MAESTRO and URMP trees, built the way the real releases are laid out.

What the real data looks like (from slakh-utils' README, mirdata's loaders and the sample files
under mirdata's tests/resources, and the URMP paper):

- Slakh2100 (redux): ``<split>/TrackNNNNN/`` for split in train, validation, test, omitted
  (omitted: duplicates). A track holds ``mix.flac``, ``all_src.mid`` (the Lakh source MIDI:
  type 0, one track, voices in channel order, drums on channel 10), ``metadata.yaml`` (UUID,
  audio_dir, lmd_midi_dir, midi_dir, normalized, overall_gain, ... and per stem Sxx:
  audio_rendered, inst_class, integrated_loudness, is_drum, midi_program_name, midi_saved,
  plugin_name, program_num, 128 for drums), ``stems/Sxx.flac`` and ``MIDI/Sxx.mid`` for the
  rendered stems only; a stem with ``audio_rendered: false`` has neither file and is not in
  the mix, though its notes are in all_src.mid. babyslakh_16k has no split folders and .wav.
- MAESTRO: ``maestro-vX.csv`` (canonical_composer, canonical_title, split, year,
  midi_filename, audio_filename, duration), v2's JSON a list of such rows, v3's JSON a column
  per field mapping row numbers to values; ``YEAR/<name>.midi`` + ``.wav``. The MIDI is a
  Disklavier performance: type 1, 384 ticks per quarter, a placeholder 120 BPM and 4/4, sustain
  (CC64) and soft (CC67) pedal events.
- URMP: ``NN_Name_codes/`` holding ``AuMix_NN_Name_codes.wav``, ``AuSep_<n>_<code>_NN_Name.wav``,
  ``F0s_<n>_<code>_NN_Name.txt`` (frame, Hz), ``Notes_<n>_<code>_NN_Name.txt`` (per note:
  onset s, Hz, duration s; aligned with the recording) and the score ``Sco_NN_Name_codes.mid``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
import yaml

from abcscribe.core.audio import render, write_audio
from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

SR = 16000
GM_NAMES = {0: "Acoustic Grand Piano", 1: "Bright Acoustic Piano", 22: "Harmonica",
            30: "Distortion Guitar", 33: "Electric Bass (finger)", 40: "Violin", 42: "Cello"}
INST_CLASS = {1: "Piano", 22: "Organ", 30: "Guitar", 33: "Bass", 128: "Drums"}


def synth(piece: Piece) -> np.ndarray:
    return render(piece, sr=SR, engine="builtin")


def write_mix(parts: list[np.ndarray], path: Path) -> None:
    n = max(len(p) for p in parts)
    mix = np.zeros(n, np.float32)
    for p in parts:
        mix[: len(p)] += p
    write_audio(path, mix / max(1.0, float(np.abs(mix).max())), SR)


def _track_events(notes, channel, tpq, program=None):
    """(abs tick, order, message) for one channel's notes, at ``tpq`` from our TPQ ticks."""
    ev = []
    if program is not None:
        ev.append((0, 0, mido.Message("program_change", channel=channel, program=program)))
    for n in notes:
        s, e = n.start * tpq // TPQ, n.end * tpq // TPQ
        ev.append((s, 2, mido.Message("note_on", channel=channel, note=n.pitch, velocity=n.velocity)))
        ev.append((e, 1, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0)))
    return ev


def _to_track(events) -> mido.MidiTrack:
    track = mido.MidiTrack()
    last = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _conductor(bpm: float, meter=(4, 4)):
    return [(0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))),
            (0, 0, mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))]


# ---- Slakh2100 ---------------------------------------------------------------------------------


@dataclass
class StemSpec:
    name: str  # S00 ...
    program: int  # GM program, 128 for drums (as Slakh's program_num)
    channel: int  # its channel in all_src.mid (the Lakh source's order)
    notes: list[Note]
    rendered: bool = True

    @property
    def drum(self) -> bool:
        return self.program == 128

    def piece(self, bpm: float) -> Piece:
        v = Voice(notes=list(self.notes), program=0 if self.drum else self.program, drum=self.drum)
        return Piece(voices=[v], tempos=[Tempo(0, bpm)], meters=[Meter(0, 4, 4)])


def band(seed: int, bars: int = 4) -> dict[str, list[Note]]:
    """Piano chords, a bass line, drums and a guitar riff, 4/4, each a quarter-note pattern
    with a rest on beat 4 of every bar (so the parts can be told apart by ear and by notes)."""
    rng = random.Random(seed)
    bar = 4 * TPQ
    piano, bass, drums, guitar = [], [], [], []
    for b in range(bars):
        t = b * bar
        root = rng.choice((60, 62, 65, 67))
        for p in (root, root + 4, root + 7):
            piano.append(Note(p, t, 2 * TPQ, 70))
        bass.extend(Note(root - 24 + k, t + k * TPQ, TPQ // 2, 90) for k in (0, 1, 2))
        drums.extend(Note(36 if k % 2 == 0 else 38, t + k * TPQ, TPQ // 4, 100) for k in range(3))
        guitar.extend(Note(root + 12 + 2 * k, t + 2 * TPQ + k * TPQ // 2, TPQ // 2, 80)
                      for k in range(2))
    return {"piano": piano, "bass": bass, "drums": drums, "guitar": guitar}


def band_stems(seed: int, guitar_rendered: bool = True) -> list[StemSpec]:
    """Stems in metadata order S00 guitar, S01 drums, S02 piano, S03 bass, while all_src.mid
    has them in channel order piano (0), bass (1), guitar (2), drums (10): the order of the
    real Track00001, where pairing by position names the piano "Distortion Guitar"."""
    parts = band(seed)
    return [StemSpec("S00", 30, 2, parts["guitar"], rendered=guitar_rendered),
            StemSpec("S01", 128, 9, parts["drums"]),
            StemSpec("S02", 1, 0, parts["piano"]),
            StemSpec("S03", 33, 1, parts["bass"])]


def make_slakh_track(d: Path, stems: list[StemSpec], bpm: float = 100.0, mix: bool = True,
                     stem_midi: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # all_src.mid: the Lakh source, type 0, every voice (rendered or not) in channel order
    src = mido.MidiFile(type=0, ticks_per_beat=480)
    events = list(_conductor(bpm))
    for st in sorted(stems, key=lambda s: s.channel):
        events += _track_events(st.notes, st.channel, 480, None if st.drum else st.program)
    src.tracks.append(_to_track(events))
    src.save(d / "all_src.mid")
    meta = {"UUID": hashlib.md5(d.name.encode()).hexdigest(), "audio_dir": "stems",
            "lmd_midi_dir": f"lmd_matched/O/O/H/TR{d.name}/{d.name}.mid", "midi_dir": "MIDI",
            "normalization_factor": -13.0, "normalized": True, "overall_gain": 0.18,
            "stems": {}, "target_peak": -1.0}
    audio = []
    for st in stems:
        meta["stems"][st.name] = {
            "audio_rendered": st.rendered, "inst_class": INST_CLASS.get(st.program, "Guitar"),
            "integrated_loudness": -16.5, "is_drum": st.drum,
            "midi_program_name": "Drums" if st.drum else GM_NAMES[st.program],
            "midi_saved": st.rendered, "plugin_name": "session_kit_full.nkm",
            "program_num": st.program}
        if not st.rendered:
            continue
        y = synth(st.piece(bpm))
        audio.append(y)
        write_audio(d / "stems" / f"{st.name}.flac", y, SR)
        if stem_midi:  # as pretty_midi writes a stem: type 1, tempo track + one instrument
            m = mido.MidiFile(type=1, ticks_per_beat=220)
            m.tracks.append(_to_track(_conductor(bpm)))
            m.tracks.append(_to_track(_track_events(st.notes, 9 if st.drum else 0, 220,
                                                    None if st.drum else st.program)))
            (d / "MIDI").mkdir(exist_ok=True)
            m.save(d / "MIDI" / f"{st.name}.mid")
    (d / "metadata.yaml").write_text(yaml.safe_dump(meta))
    if mix:
        write_mix(audio, d / "mix.flac")


# ---- MAESTRO -----------------------------------------------------------------------------------


@dataclass
class Performance:
    """A played piece: notes with times in seconds, the pedal, what MAESTRO's row says."""

    name: str
    title: str
    split: str
    bpm: float = 84.0
    start: float = 0.6
    beats: int = 24
    seed: int = 0
    composer: str = "Frédéric Chopin"
    year: int = 2018
    # (onset s, key release s, pitch, velocity), (pedal down s, pedal up s)
    notes: list[tuple[float, float, int, int]] = field(default_factory=list)
    pedal: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self):
        rng = random.Random(self.seed)
        t = self.start
        for b in range(self.beats):
            period = 60.0 / self.bpm * (1 + 0.04 * math.sin(b / 3))  # a little rubato
            chord = (48 + rng.choice((0, 2, 5)),) + ((64, 67) if b % 2 == 0 else (72,))
            for p in chord:
                self.notes.append((t + rng.uniform(-0.01, 0.01), t + 0.12, p, 90 if b % 2 == 0 else 60))
            self.pedal.append((t + 0.05, t + period - 0.03))  # the usual change after each beat
            t += period

    def sounding(self) -> Piece:
        """What the audio holds: keys held on by the pedal until it comes up."""
        notes = []
        for on, off, p, v in self.notes:
            up = next((u for d, u in self.pedal if d <= off < u), off)
            notes.append(Note(p, int(on * TPQ), int((up - on) * TPQ), v))
        return Piece(voices=[Voice(notes=notes)], tempos=[Tempo(0, 60.0)])

    def write(self, root: Path) -> None:
        """``YEAR/name.midi`` as MAESTRO's: 384 ticks a quarter, 120 BPM and 4/4 placeholders,
        the piano on one track with its sustain and soft pedal, and the recording."""
        tick = lambda s: int(round(s * 2 * 384))  # noqa: E731  (120 BPM: 2 quarters a second)
        m = mido.MidiFile(type=1, ticks_per_beat=384)
        m.tracks.append(_to_track(_conductor(120.0)))
        ev = [(0, 0, mido.Message("program_change", channel=0, program=0)),
              (0, 0, mido.Message("control_change", channel=0, control=67, value=0))]
        for on, off, p, v in self.notes:
            ev.append((tick(on), 2, mido.Message("note_on", channel=0, note=p, velocity=v)))
            ev.append((tick(off), 1, mido.Message("note_on", channel=0, note=p, velocity=0)))
        for down, up in self.pedal:
            ev.append((tick(down), 0, mido.Message("control_change", channel=0, control=64, value=127)))
            ev.append((tick(up), 0, mido.Message("control_change", channel=0, control=64, value=0)))
        ev.append((tick(self.start + 1.0), 0, mido.Message("control_change", channel=0, control=67, value=90)))
        ev.append((tick(self.start + 2.0), 0, mido.Message("control_change", channel=0, control=67, value=0)))
        m.tracks.append(_to_track(ev))
        (root / str(self.year)).mkdir(parents=True, exist_ok=True)
        m.save(root / str(self.year) / f"{self.name}.midi")
        write_audio(root / str(self.year) / f"{self.name}.wav", synth(self.sounding()), SR)

    def row(self) -> dict:
        end = max(off for _, off, _, _ in self.notes)
        return {"canonical_composer": self.composer, "canonical_title": self.title,
                "split": self.split, "year": self.year,
                "midi_filename": f"{self.year}/{self.name}.midi",
                "audio_filename": f"{self.year}/{self.name}.wav", "duration": round(end, 6)}


def write_maestro_metadata(root: Path, rows: list[dict], kind: str) -> Path:
    """MAESTRO's metadata as ``csv`` (v3's), ``v2json`` (a list of rows) or ``v3json`` (a
    column per field, row numbers as keys)."""
    cols = ["canonical_composer", "canonical_title", "split", "year", "midi_filename",
            "audio_filename", "duration"]
    if kind == "csv":
        import csv

        path = root / "maestro-v3.0.0.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows(rows)
    elif kind == "v2json":
        path = root / "maestro-v2.0.0.json"
        path.write_text(json.dumps(rows, indent=4))
    else:
        path = root / "maestro-v3.0.0.json"
        path.write_text(json.dumps({c: {str(i): r[c] for i, r in enumerate(rows)} for c in cols}))
    return path


# ---- URMP --------------------------------------------------------------------------------------


def make_urmp_piece(root: Path, number: int, name: str, parts: list[tuple[str, int, list[Note]]],
                    score_bpm: float = 100.0, played_bpm: float = 80.0, start: float = 1.3,
                    notes_files: bool = True) -> dict[str, list[tuple[float, int, float]]]:
    """A URMP piece folder. ``parts``: (code, GM program, score notes). The score is at
    ``score_bpm`` from time zero; the players start at ``start`` seconds and play at
    ``played_bpm`` with some rubato, so the score is not aligned with the recording. Returns
    the performed (onset s, pitch, duration s) per part code, as the Notes files hold them."""
    codes = "_".join(c for c, _, _ in parts)
    d = root / f"{number:02d}_{name}_{codes}"
    d.mkdir(parents=True, exist_ok=True)
    score = Piece(voices=[Voice(notes=list(ns), program=prog) for _, prog, ns in parts],
                  tempos=[Tempo(0, score_bpm)], meters=[Meter(0, 4, 4)])
    from abcscribe.core.midi import write_midi

    write_midi(score, d / f"Sco_{number:02d}_{name}_{codes}.mid")

    def when(tick: float) -> float:  # a score position played: slower, with rubato
        beats = tick / TPQ
        return start + beats * 60.0 / played_bpm + 0.08 * math.sin(beats / 2)

    performed, audio = {}, []
    for i, (code, prog, ns) in enumerate(parts, 1):
        rows = [(when(n.start), n.pitch, 0.9 * (when(n.end) - when(n.start))) for n in ns]
        performed[code] = rows
        tag = f"{i}_{code}_{number:02d}_{name}"
        if notes_files:
            (d / f"Notes_{tag}.txt").write_text("".join(
                f"{on:.7f}\t{440.0 * 2 ** ((p - 69) / 12):.4f}\t{dur:.7f}\n" for on, p, dur in rows))
            frames = np.arange(0, rows[-1][0] + rows[-1][2] + 0.5, 0.005)
            f0 = np.zeros(len(frames))
            for on, p, dur in rows:
                f0[(frames >= on) & (frames < on + dur)] = 440.0 * 2 ** ((p - 69) / 12)
            (d / f"F0s_{tag}.txt").write_text("".join(f"{t:.3f}\t{f:.3f}\n" for t, f in zip(frames, f0)))
        played = Piece(voices=[Voice(notes=[Note(p, int(on * TPQ), int(dur * TPQ)) for on, p, dur in rows],
                                     program=prog)], tempos=[Tempo(0, 60.0)])
        y = synth(played)
        audio.append(y)
        write_audio(d / f"AuSep_{tag}.wav", y, SR)
    write_mix(audio, d / f"AuMix_{number:02d}_{name}_{codes}.wav")
    return performed
