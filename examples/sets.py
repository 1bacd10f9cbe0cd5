"""Make the demo's record sets: concatenate JSONL record files into one, optionally keeping
only some pieces, every k-th record, or the first n, with each record's file paths kept valid
('audio' and 'embedding' paths relative to their own file are rewritten relative to the output).
``--repeat bach-=8`` writes each kept record of a piece starting with bach- 8 times (a set of
prompts weighted towards those pieces). ``--metres-like train.jsonl`` draws the kept records
again, about as many, so that their metres (each record's ``meta``, as mkqa writes it) come in
the proportions of that file's records (the same --pieces/--not-pieces kept): a set of a few
pieces whose metres are not those of the music it stands for.

    python examples/sets.py OUT.jsonl A.jsonl B.jsonl [--pieces bach-] [--not-pieces bach-]
                            [--every 2] [--limit 150] [--repeat bach-=8] [--metres-like REF]"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
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


def metre(rec: dict) -> str:
    """The time signature mkqa gave a record's clip ("" when it has none)."""
    return str((rec.get("meta") or {}).get("metre") or "")


def like_metres(recs: list, ref: Counter, seed: int = 0) -> list:
    """``recs`` drawn again, as many give or take the rounding, so that their metres come in
    the proportions of ``ref`` (metre -> count) among the metres ``recs`` have: each metre's
    records in a shuffled order, every one once before any twice. A metre ``ref`` lacks is left
    out."""
    by: dict[str, list] = {}
    for rec in recs:
        by.setdefault(metre(rec), []).append(rec)
    total = sum(ref[m] for m in by)
    rng = random.Random(seed)
    out = []
    for m in sorted(by):
        mine = by[m][:]
        rng.shuffle(mine)
        want = round(ref[m] / total * len(recs)) if total else 0
        out += [mine[i % len(mine)] for i in range(want)]
    return out


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
    ap.add_argument("--metres-like", type=Path, default=None, metavar="REF",
                    help="draw the kept records again so their metres come in the proportions of REF's")
    args = ap.parse_args(argv)
    prefix, times = None, 1
    if args.repeat:
        prefix, _, count = args.repeat.rpartition("=")
        if not prefix or not count.isdigit() or int(count) < 1:
            ap.error(f"--repeat wants PREFIX=N with N a whole number >= 1, not {args.repeat!r}")
        times = int(count)
    if args.metres_like is not None and not args.metres_like.is_file():
        ap.error(f"--metres-like {args.metres_like}: no such file")

    def wanted(rec: dict) -> bool:
        piece = str(rec.get("piece", ""))
        return not ((args.pieces is not None and not piece.startswith(args.pieces))
                    or (args.not_pieces is not None and piece.startswith(args.not_pieces)))

    kept_recs = []
    for src in args.inputs:
        kept = seen = 0
        for rec in records(src, args.out):
            if not wanted(rec):
                continue
            seen += 1
            if (seen - 1) % args.every:
                continue
            if args.limit and kept >= args.limit:
                break
            kept_recs.append(rec)
            kept += 1
    if args.metres_like is not None:
        kept_recs = like_metres(kept_recs, Counter(metre(r) for r in records(args.metres_like, args.out)
                                                   if wanted(r)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(f"{args.out}.tmp", "w", encoding="utf-8") as f:
        for rec in kept_recs:
            piece = str(rec.get("piece", ""))
            copies = times if prefix is not None and piece.startswith(prefix) else 1
            f.write((json.dumps(rec) + "\n") * copies)
            n += copies
    os.replace(f"{args.out}.tmp", args.out)
    print(f"sets: {n} records -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
