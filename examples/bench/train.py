"""Samples per second and peak memory of `sft` and `ppo` on the same tiny model with LoRA, on CPU.

    python examples/bench/train.py [--quick] [--json]

Each run is its own process (peak RSS from getrusage is per process): first a LoRA sft of the
`tiny` preset on rendered toy clips, then ppo from that sft output. Figures: samples/s of each
(sft: training records per second; ppo: sampled completions per second, rollouts and updates
included), the peak RSS of each process, and the ratio ppo/sft of the peak (target <= 1.5; the
seed needed twice the GPU memory for PPO) and of the memory added by training on top of the
loaded model."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LETTERS = "CDEFGAB"
PITCH = dict(C=60, D=62, E=64, F=65, G=67, A=69, B=71)


def make_data(folder: Path, n: int) -> Path:
    """``n`` transcription records (one bar, two half notes) with audio and CQT embeddings."""
    from abcscribe.core.audio import render, write_audio
    from abcscribe.core.encoders import get_encoder, save_embeddings
    from abcscribe.core.notes import TPQ, Note, Piece, Tempo, Voice

    enc = get_encoder("cqt")
    rng = random.Random(0)
    lines = []
    for i in range(n):
        notes = [rng.choice(LETTERS) for _ in range(2)]
        bpm = rng.randrange(70, 161, 5)
        piece = Piece(voices=[Voice([Note(PITCH[c], 2 * j * TPQ, 2 * TPQ) for j, c in enumerate(notes)])],
                      tempos=[Tempo(0, float(bpm))])
        audio = render(piece, sr=enc.sample_rate, engine="builtin")
        wav, emb = folder / f"c{i}.wav", folder / f"c{i}.safetensors"
        write_audio(wav, audio, enc.sample_rate)
        save_embeddings(emb, enc.encode(audio), {"encoder": "cqt", "frame_rate": enc.frame_rate})
        abc = (f"X:1\nM:4/4\nL:1/4\nQ:1/4={bpm}\nK:C\nV:1 name=\"Acoustic Grand Piano\"\n"
               f"%%MIDI program 0\n" + " ".join(f"{c}2" for c in notes) + " |\n")
        lines.append(json.dumps({
            "id": f"c{i}", "audio": str(wav), "embedding": str(emb), "offset": 0.0,
            "duration": len(audio) / enc.sample_rate, "task": "transcribe", "abc": abc,
            "messages": [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Transcribe this audio to ABC."}]},
                         {"role": "assistant", "content": abc}]}))  # fmt: skip
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def child_sft(data: Path, out: Path, steps: int, batch: int) -> dict:
    from abcscribe.core.train.sft import SFTOptions, run_sft

    t0 = time.monotonic()
    summary = run_sft(data, out, SFTOptions(lora=True, max_steps=steps, batch_size=batch,
                                            logging_steps=steps, lr=1e-3), warn=lambda m: None)
    dt = time.monotonic() - t0
    return {"samples_per_s": steps * batch / dt, "seconds": dt, "peak_mb": peak_rss_mb(),
            "steps": summary.get("steps")}


def child_ppo(data: Path, model: Path, out: Path, steps: int, batch: int, k: int) -> dict:
    from abcscribe.core.files import read_jsonl
    from abcscribe.core.models import load_model
    from abcscribe.core.train import ppo

    records = list(read_jsonl(data))
    lm = load_model(str(model), train=True)
    loaded = rss_mb()
    # one prompt's k completions per optimiser step: the same number of sequences per forward
    # and backward pass as sft's batch, so the two peaks compare like with like
    cfg = ppo.PPOConfig(batch_size=batch, samples_per_prompt=k, max_new_tokens=64, max_steps=steps,
                        mini_batch_size=k)
    t0 = time.monotonic()
    ppo.train(lm, records, out, cfg, warn=lambda m: None)
    dt = time.monotonic() - t0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"samples_per_s": steps * batch * k / dt, "seconds": dt, "peak_mb": peak_rss_mb(),
            "loaded_mb": loaded, "lora": bool(json.loads((model / "abcscribe.json").read_text()).get("lora")),
            "response_length": sum(r["response_length"] for r in log) / len(log)}


def child_load(model: Path) -> dict:
    """RSS of a process that only loads the model: the floor both runs stand on."""
    from abcscribe.core.models import load_model

    load_model(str(model), train=True)
    return {"peak_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train bench: child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer clips and steps")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "sft":
            res = child_sft(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "ppo":
            res = child_ppo(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]), int(rest[4]), int(rest[5]))
        else:
            res = child_load(Path(rest[0]))
        print(json.dumps(res))
        return 0

    # sft batch = ppo mini-batch = k sequences per forward/backward
    n, sft_steps, ppo_steps, batch, k = (16, 10, 2, 4, 8) if args.quick else (64, 40, 6, 4, 8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp, n)
        sft = run_child("sft", str(data), str(tmp / "sft"), str(sft_steps), str(k))
        base = run_child("load", str(tmp / "sft"))
        ppo = run_child("ppo", str(data), str(tmp / "sft"), str(tmp / "ppo"), str(ppo_steps), str(batch), str(k))
    ratio = ppo["peak_mb"] / sft["peak_mb"]
    added = (ppo["peak_mb"] - base["peak_mb"]) / max(sft["peak_mb"] - base["peak_mb"], 1e-9)
    print(f"tiny preset with LoRA, CPU; sft {sft_steps} steps of {k} records, ppo {ppo_steps} steps of "
          f"{batch} prompts x {k} samples, {k} per optimiser step (mean completion "
          f"{ppo['response_length']:.0f} tokens)")
    print(f"sft: {sft['samples_per_s']:.1f} samples/s, peak RSS {sft['peak_mb']:.0f} MB")
    print(f"ppo: {ppo['samples_per_s']:.1f} samples/s, peak RSS {ppo['peak_mb']:.0f} MB (LoRA: {ppo['lora']})")
    print(f"model loaded alone: {base['peak_mb']:.0f} MB; ppo/sft peak {ratio:.2f}, "
          f"memory added by training ppo/sft {added:.2f}")
    figures = [
        {"metric": "sft samples/s (tiny, LoRA, CPU)", "value": sft["samples_per_s"], "unit": "samples/s", "target": None},
        {"metric": "ppo samples/s (tiny, LoRA, CPU)", "value": ppo["samples_per_s"], "unit": "samples/s", "target": None},
        {"metric": "sft peak RSS", "value": sft["peak_mb"], "unit": "MB", "target": None},
        {"metric": "ppo peak RSS", "value": ppo["peak_mb"], "unit": "MB", "target": None},
        {"metric": "ppo/sft peak memory", "value": ratio, "unit": "x", "target": "<= 1.5"},
        {"metric": "ppo/sft memory added by training", "value": added, "unit": "x", "target": None},
    ]
    if args.json:
        print(json.dumps({"name": "train", "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
