"""Add transposed and time-stretched copies of training records that carry stored CQT frames
(`abcscribe embed --encoder cqt --pool-ms 0`), with `abcscribe.core.augment`.

    python examples/augment.py IN.emb.jsonl OUT.jsonl --dir emb-aug --copies 2

OUT holds every record of IN and, for each, COPIES new ones: each transposed by a random
number of semitones (-5..+6, not 0; within C2..B7) and sped up by a random rate (0.85..1.15).
Seeded, so the same arguments give the same files."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from abcscribe.core.augment import augment_record
from abcscribe.core.errors import UserError
from abcscribe.core.models.records import resolve_paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dir", type=Path, required=True, help="folder for the new frames")
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    made = skipped = 0
    with open(f"{args.out}.tmp", "w", encoding="utf-8") as f:
        for line in args.src.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = resolve_paths(json.loads(line), args.src.parent)
            f.write(json.dumps(rec) + "\n")
            rng = random.Random(f"{args.seed}:{rec.get('id')}")
            for c in range(args.copies):
                k = rng.choice([s for s in range(-5, 7) if s])
                rate = round(rng.uniform(0.85, 1.15), 2)
                out = args.dir / f"{str(rec.get('id')).replace('/', '_').replace(':', '_')}+{c}.safetensors"
                try:
                    f.write(json.dumps(augment_record(rec, out, semitones=k, rate=rate)) + "\n")
                    made += 1
                except UserError:
                    skipped += 1
    os.replace(f"{args.out}.tmp", args.out)
    print(f"augment: {made} new records ({skipped} left out: notes outside C2..B7) -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
