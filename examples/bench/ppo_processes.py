"""Rollouts per second of `abcscribe ppo` with one process and with several (torchrun, CPU, gloo).

    python examples/bench/ppo_processes.py [--processes 2] [--steps 4] [--json]

The same tiny sft model (the `tiny` preset after a few steps on rendered toy clips) is trained
by `abcscribe ppo` as a user runs it, once as one process and once under
`torchrun --standalone --nproc-per-node N`, each process with one torch thread. Each process
draws `--batch-size` prompts per step, so N processes sample N times the completions per step;
the figure is sampled completions per second of the whole job (the log's `samples_per_s`), the
first step (warm-up) left out. Ideal scaling on N free cores is N."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import make_data  # noqa: E402  (the same toy clips as the sft/ppo bench)


def rate(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "samples_per_s" in r][1:]
    return sum(r["samples_per_s"] for r in rows) / len(rows)


def ppo(nproc: int, data: Path, model: Path, out: Path, steps: int, batch: int, k: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
              if nproc > 1 else [sys.executable])
    cmd = [*launch, "-m", "abcscribe", "ppo", "--data", str(data), "--model", str(model), "-o", str(out),
           "--max-steps", str(steps), "--batch-size", str(batch), "--samples-per-prompt", str(k),
           "--max-new-tokens", "48", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"ppo bench: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return rate(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4, help="prompts per step and process")
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="3 steps")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp, 64)
        sft = tmp / "sft"
        subprocess.run([sys.executable, "-m", "abcscribe", "sft", "--data", str(data), "--model", "tiny",
                        "-o", str(sft), "--max-steps", "20", "--batch-size", "8"],
                       check=True, capture_output=True)
        one = ppo(1, data, sft, tmp / "ppo1", args.steps, args.batch_size, args.samples_per_prompt)
        many = ppo(args.processes, data, sft, tmp / "ppoN", args.steps, args.batch_size, args.samples_per_prompt)
    ratio = many / one
    print(f"ppo, tiny preset, CPU, {args.batch_size} prompts x {args.samples_per_prompt} samples per step "
          f"and process: 1 process {one:.1f} samples/s, {args.processes} processes {many:.1f} samples/s, "
          f"ratio {ratio:.2f} ({os.cpu_count()} CPUs)")
    if args.json:
        n = args.processes
        print(json.dumps({"name": "ppo_processes", "figures": [
            {"metric": "ppo samples/s, 1 process (tiny, CPU)", "value": one, "unit": "samples/s", "target": None},
            {"metric": f"ppo samples/s, {n} processes (torchrun, gloo)", "value": many, "unit": "samples/s", "target": None},
            {"metric": f"ppo throughput ratio {n}/1 processes", "value": ratio, "unit": "x", "target": f"~{n} on {n} free cores"},
        ]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
