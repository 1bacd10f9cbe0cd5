"""mkqa on the demo's kind of input: a folder of single-instrument tunes as MIDI, rendered on the
fly, cut into two-bar clips. Prints pieces/s with rendering, pieces/s and records/s when the
audio is already there, and whether a re-run writes the same bytes.

    python examples/bench/mkqa.py [--quick] [--json]"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from abcscribe.core.midi import write_midi
from abcscribe.core.notes import TPQ, Key, Meter, Note, Piece, Tempo, Voice


def tune(rng: random.Random) -> Piece:
    """16-32 bars of eighths and quarters in 2/4, 3/4, 4/4 or 6/8, one GM instrument, a tempo."""
    num, den = rng.choice(((2, 4), (3, 4), (4, 4), (6, 8)))
    bar = num * TPQ * 4 // den
    end = rng.randint(16, 32) * bar
    notes, t = [], 0
    while t < end:
        d = min(rng.choice((TPQ // 2, TPQ // 2, TPQ)), end - t)
        notes.append(Note(rng.randrange(62, 86), t, d))
        t += d
    return Piece(voices=[Voice(notes=notes, program=rng.choice((0, 24, 40, 56, 71, 73)))],
                 tempos=[Tempo(0, float(rng.randint(70, 160)))], meters=[Meter(0, num, den)],
                 key=Key(rng.randint(-2, 3)))


def run(args: list[str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "abcscribe", "mkqa", *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"mkqa failed: {p.stderr[-500:]}")
    return time.monotonic() - t0


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.jsonl")):
        h.update(f.read_bytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 pieces instead of 200")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    ap.add_argument("--engine", default="builtin", help="render engine (builtin, fluidsynth)")
    a = ap.parse_args()
    n = 40 if a.quick else 200
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(n):
            write_midi(tune(rng), tmp / "midi" / f"tune{i:04d}.mid")
        common = ["--render", "--engine", a.engine, "--min-bars", "2", "--max-bars", "2"]
        t_render = run([str(tmp / "midi"), *common, "--out-dir", str(tmp / "qa")])
        first = digest(tmp / "qa")
        records = sum(len(f.read_text().splitlines()) for f in (tmp / "qa").glob("*.jsonl"))
        for f in (tmp / "qa").glob("*.jsonl"):
            f.unlink()
        t_again = run([str(tmp / "midi"), *common, "--out-dir", str(tmp / "qa")])
        same = digest(tmp / "qa") == first
    figures = [
        {"metric": f"pieces/s rendering ({a.engine})", "value": n / t_render, "unit": "pieces/s",
         "target": None},
        {"metric": "pieces/s with audio present", "value": n / t_again, "unit": "pieces/s",
         "target": ">= 50"},
        {"metric": "records/s with audio present", "value": records / t_again, "unit": "records/s",
         "target": None},
        {"metric": "re-run byte-identical", "value": int(same), "unit": "bool", "target": "1"},
    ]
    print(f"{n} pieces, {records} records (2-bar clips, 6 tasks)")
    for f in figures:
        print(f"{f['metric']}: {f['value']:.4g} {f['unit']}")
    if a.json:
        print(json.dumps({"name": "mkqa", "figures": figures}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
