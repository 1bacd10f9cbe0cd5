"""Compare two systems' scores of the same clips: each one's mean, and the paired difference
(B - A, 95% bootstrap interval) in reward and note F1.

    python examples/paired.py A.jsonl B.jsonl [--label chorales]

A and B are `abcscribe score` outputs of one set's transcriptions by two systems (records in
the set's order)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from report import paired, read_jsonl, summarise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--label", default="", help="a name for the clips, printed first")
    args = ap.parse_args(argv)
    a, b = read_jsonl(args.a), read_jsonl(args.b)
    sa, sb = summarise(a), summarise(b)
    # a system's name: the last part of its file's stem (runs/x/scores/tunes.ppo.jsonl: ppo)
    na, nb = (p.stem.rsplit(".", 1)[-1] for p in (args.a, args.b))
    for metric in ("reward", "note_f1"):
        d = paired(b, a, metric)
        print(f"{args.label:10} {metric:8} n={d['n']:<4} {na} {sa[metric]['mean']:.4f}  "
              f"{nb} {sb[metric]['mean']:.4f}  {nb} - {na} "
              f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (`| head -1`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
