"""Run every benchmark in this folder and print one table: figure, value, target.

    python examples/bench/run_all.py [--quick]

Each bench script prints its own figures and, with --json, one JSON object on its last line:
{"name": ..., "figures": [{"metric", "value", "unit", "target"}, ...]}."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    rows, failed = [], []
    for script in sorted(HERE.glob("*.py")):
        if script.name == "run_all.py":
            continue
        cmd = [sys.executable, str(script), "--json"] + (["--quick"] if quick else [])
        print(f"== {script.name}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-2000:])
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        try:
            res = json.loads(last)
        except json.JSONDecodeError:
            failed.append(script.name)
            print(f"   {script.name} gave no JSON (exit {proc.returncode})", file=sys.stderr)
            continue
        for f in res.get("figures", []):
            rows.append((res.get("name", script.stem), f))
        print(f"   {time.monotonic() - t0:.0f} s", file=sys.stderr)
    w = max((len(f"{n}: {f['metric']}") for n, f in rows), default=10)
    print(f"{'figure':<{w}}  {'value':>12}  {'unit':<12}  target")
    for name, f in rows:
        v = f.get("value")
        vs = f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
        print(f"{name + ': ' + f['metric']:<{w}}  {vs:>12}  {f.get('unit', ''):<12}  {f.get('target') or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
