"""Make the demo's record sets: concatenate JSONL record files into one, optionally keeping
only some pieces, every k-th record, or the first n, with each record's file paths kept valid
('audio' and 'embedding' paths relative to their own file are rewritten relative to the output).
``--repeat bach-=8`` writes each kept record of a piece starting with bach- 8 times (a set of
prompts weighted towards those pieces).

    python examples/sets.py OUT.jsonl A.jsonl B.jsonl [--pieces bach-] [--not-pieces bach-]
                            [--every 2] [--limit 150] [--repeat bach-=8]"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def records(src: Path, out: Path):
    """The records of ``src`` with relative paths rewritten for a file in ``out``'s folder."""
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        for key in ("audio", "embedding"):
            p = rec.get(key)
            if isinstance(p, str) and p and not os.path.isabs(p):
                rec[key] = os.path.relpath(src.parent / p, out.parent)
        yield rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--pieces", default=None, help="keep records whose piece starts with this")
    ap.add_argument("--not-pieces", default=None, help="drop records whose piece starts with this")
    ap.add_argument("--every", type=int, default=1, help="keep every k-th record of each input")
    ap.add_argument("--limit", type=int, default=0, help="at most this many records of each input")
    ap.add_argument("--repeat", default=None, metavar="PREFIX=N",
                    help="write each kept record of a piece starting with PREFIX N times")
    args = ap.parse_args(argv)
    prefix, times = None, 1
    if args.repeat:
        prefix, _, count = args.repeat.rpartition("=")
        if not prefix or not count.isdigit() or int(count) < 1:
            ap.error(f"--repeat wants PREFIX=N with N a whole number >= 1, not {args.repeat!r}")
        times = int(count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(f"{args.out}.tmp", "w", encoding="utf-8") as f:
        for src in args.inputs:
            kept = seen = 0
            for rec in records(src, args.out):
                piece = str(rec.get("piece", ""))
                if args.pieces is not None and not piece.startswith(args.pieces):
                    continue
                if args.not_pieces is not None and piece.startswith(args.not_pieces):
                    continue
                seen += 1
                if (seen - 1) % args.every:
                    continue
                if args.limit and kept >= args.limit:
                    break
                copies = times if prefix is not None and piece.startswith(prefix) else 1
                f.write((json.dumps(rec) + "\n") * copies)
                kept += 1
                n += copies
    os.replace(f"{args.out}.tmp", args.out)
    print(f"sets: {n} records -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
