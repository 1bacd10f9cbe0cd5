"""Benchmark: MIDI -> ABC speed, abcscribe against abcmidi's midi2abc, on the same folder.

    python examples/bench/midi2abc.py [--quick] [--json] [--files N] [--minutes M]

Builds a folder of large multi-track MIDI files (10 channels with drums, chords, triplets,
minutes long, half of them performed: constant lead-in and timing jitter), then converts it
with one batch call `abcscribe midi2abc DIR -o OUT` and with abcmidi's `midi2abc` in a shell
loop, and prints notes per second for both and their ratio (target: >= 0.2). While the
midi2abc command is not built, abcscribe is timed in-process (read_midi + write_abc)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido

PROGRAMS = [0, 33, 48, 56, 65, 73, 40, 24, 11, 19]  # piano, bass, strings, trumpet, sax, ...


def build_file(path: Path, seed: int, minutes: float, performed: bool) -> int:
    """One multi-track file; returns its note count."""
    rnd = random.Random(seed)
    tpb = rnd.choice([384, 480, 960])
    bpm = rnd.choice([96, 110, 120, 132])
    beats = int(minutes * bpm)
    lead = rnd.randint(tpb // 8, tpb) if performed else 0
    jitter = tpb // 40 if performed else 0
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    cond = mido.MidiTrack()
    cond.append(mido.MetaMessage("track_name", name=f"bench {seed}"))
    cond.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    cond.append(mido.MetaMessage("time_signature", numerator=4, denominator=4))
    cond.append(mido.MetaMessage("key_signature", key=rnd.choice(["C", "G", "F", "Am", "D"])))
    mid.tracks.append(cond)
    count = 0
    for k, ch in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]):  # channel 9 is the drum kit
        events = []
        unit = [tpb // 4, tpb // 2, tpb, tpb // 3, tpb // 2][k % 5]
        t = 0
        while t < beats * tpb:
            d = unit * rnd.choice([1, 1, 1, 2])
            if ch == 9:
                pitches = rnd.sample([35, 36, 38, 42, 46, 49, 51], rnd.randint(1, 3))
            elif k % 3 == 0:
                root = rnd.randint(48, 67)
                pitches = [root, root + rnd.choice([3, 4]), root + 7]
            else:
                pitches = [rnd.randint(40 + 4 * k, 64 + 4 * k)]
            for p in pitches:
                on = t + lead + (rnd.randint(-jitter, jitter) if jitter else 0)
                off = t + lead + d - (rnd.randint(0, jitter * 2) if jitter else 0)
                events.append((max(on, 0), 1, p))
                events.append((max(off, on + 1), 0, p))
                count += 1
            t += d
        events.sort()
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=f"part {ch + 1}"))
        if ch != 9:
            tr.append(mido.Message("program_change", channel=ch, program=PROGRAMS[k]))
        last = 0
        for tick, is_on, p in events:
            kind = "note_on" if is_on else "note_off"
            tr.append(mido.Message(kind, channel=ch, note=p, velocity=80, time=tick - last))
            last = tick
        mid.tracks.append(tr)
    mid.save(path)
    return count


def abcscribe_cmd() -> list[str] | None:
    """The way to run `abcscribe midi2abc`, or None while the command is not built yet."""
    cmd = [sys.executable, "-m", "abcscribe", "midi2abc"]
    proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True)
    built = proc.returncode == 0 and "--unit" in proc.stdout and "not built" not in proc.stdout
    return cmd if built else None


def time_abcscribe(src: Path, out: Path, *extra: str) -> tuple[float, str]:
    cmd = abcscribe_cmd()
    if cmd is not None:
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + [str(src), "-o", str(out), *extra], capture_output=True,
                              text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"abcscribe midi2abc failed:\n{proc.stderr[-2000:]}")
        return dt, " ".join(["abcscribe midi2abc DIR -o OUT", *extra])
    from abcscribe.core.abc import write_abc
    from abcscribe.core.midi import read_midi

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(src.glob("*.mid")), 1):
        (out / (f.stem + ".abc")).write_text(write_abc(read_midi(f), x=i))
    return time.perf_counter() - t0, "in-process read_midi + write_abc (command not built)"


def time_abcmidi(src: Path, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    loop = f'for f in "{src}"/*.mid; do midi2abc "$f" > "{out}/$(basename "$f" .mid).abc"; done'
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", loop], check=True, capture_output=True)
    return time.perf_counter() - t0


def time_read_midi(src: Path) -> float:
    from abcscribe.core.midi import read_midi

    files = sorted(src.glob("*.mid"))
    read_midi(files[0])  # warm imports
    t0 = time.perf_counter()
    for f in files:
        read_midi(f)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller folder, one timing run")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--files", type=int, default=None, help="number of MIDI files")
    ap.add_argument("--minutes", type=float, default=None, help="length of each file")
    args = ap.parse_args()
    if shutil.which("midi2abc") is None:
        sys.exit("abcmidi's midi2abc is not installed (apt-get install abcmidi)")
    # bytecode as an installed package has it: with PYTHONDONTWRITEBYTECODE set (as in some
    # sandboxes and containers) an editable checkout would be recompiled on every run
    import abcscribe

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(abcscribe.__file__).parent)],
                   check=True, capture_output=True)
    n_files = args.files or (4 if args.quick else 12)
    minutes = args.minutes or (1.5 if args.quick else 3.0)
    repeats = 1 if args.quick else 3

    with tempfile.TemporaryDirectory(prefix="bench-midi2abc-") as tmp:
        src = Path(tmp) / "midi"
        src.mkdir()
        notes = sum(
            build_file(src / f"piece{i:02d}.mid", i, minutes, performed=i % 2 == 1)
            for i in range(n_files)
        )
        print(f"{n_files} files, {notes} notes, {minutes} min each, 10 channels incl. drums",
              file=sys.stderr)
        ours, how = min(
            (time_abcscribe(src, Path(tmp) / f"ours{r}") for r in range(repeats)),
            key=lambda x: x[0],
        )
        cores = os.cpu_count() or 1
        par, how_par = min(
            (time_abcscribe(src, Path(tmp) / f"par{r}", "--jobs", "0") for r in range(repeats)),
            key=lambda x: x[0],
        ) if cores > 1 and how.startswith("abcscribe midi2abc") else (None, "")
        theirs = min(time_abcmidi(src, Path(tmp) / f"abcmidi{r}") for r in range(repeats))
        reading = min(time_read_midi(src) for _ in range(repeats))

    ours_rate, theirs_rate = notes / ours, notes / theirs
    ratio = ours_rate / theirs_rate
    print(f"abcscribe ({how}): {ours:.3f} s, {ours_rate:,.0f} notes/s")
    print(f"abcmidi midi2abc (shell loop): {theirs:.3f} s, {theirs_rate:,.0f} notes/s")
    print(f"ratio abcscribe/abcmidi: {ratio:.3f} (target >= 0.2; one process, as abcmidi's loop)")
    par_ratio = None
    if par is not None:
        par_ratio = (notes / par) / theirs_rate
        print(f"abcscribe ({how_par}, {cores} cores): {par:.3f} s, {notes / par:,.0f} notes/s, "
              f"ratio {par_ratio:.3f}")
    print(f"read_midi alone: {notes / reading:,.0f} notes/s")
    if args.json:
        print(json.dumps({
            "name": "midi2abc",
            "figures": [
                {"metric": "abcscribe notes/s", "value": round(ours_rate), "unit": "notes/s",
                 "target": None},
                {"metric": "abcmidi notes/s", "value": round(theirs_rate), "unit": "notes/s",
                 "target": None},
                {"metric": "speed ratio abcscribe/abcmidi", "value": round(ratio, 4), "unit": "x",
                 "target": ">= 0.2"},
                {"metric": "speed ratio with --jobs 0 (all cores)",
                 "value": None if par_ratio is None else round(par_ratio, 4), "unit": "x",
                 "target": None},
                {"metric": "read_midi notes/s", "value": round(notes / reading),
                 "unit": "notes/s", "target": None},
            ],
        }))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
