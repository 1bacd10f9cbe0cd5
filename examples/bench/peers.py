"""Our transcribers beside Spotify's basic-pitch on the same held-out clips of every demo
condition: note F1 (onset 50 ms), pitch loss, reward and audio seconds per second.

    python examples/bench/peers.py [--run examples/runs/demo] [--json]
    python examples/bench/peers.py predict EVAL.jsonl > PRED.jsonl   # basic-pitch records for `score`

basic-pitch needs tensorflow<2.15.1 and numpy<2, so it lives in its own venv
(examples/bench/.venv-basic-pitch), created here on first use; it is never a dependency of
abcscribe. Its raw note events are scored as they are (`note_f1_raw`, the figure its authors
report); for the seed's reward they go through abcscribe's own quantiser and ABC writer at 120
BPM in 4/4 (basic-pitch writes one voice, no metre, key or instrument).

The demo (`make demo`) must have run: its eval sets (RUN/eval/COND.jsonl) and models
(RUN/ppo, RUN/sft) are what is compared."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-basic-pitch"
PIP = ["basic-pitch", "tensorflow<2.15.1", "numpy<2"]
CONDITIONS = ("demo", "soundfont", "voices")

# Runs inside the basic-pitch venv: one JSON line in (an audio path), one out (its notes).
WORKER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch.inference import predict
try:
    from basic_pitch.inference import Model
    model = Model(ICASSP_2022_MODEL_PATH)
except Exception:
    model = ICASSP_2022_MODEL_PATH
for line in sys.stdin:
    path = json.loads(line)["audio"]
    t = time.time()
    _, _, events = predict(path, model)
    notes = [[float(e[0]), float(e[1]), int(e[2])] for e in events]
    print(json.dumps({"audio": path, "seconds": time.time() - t, "notes": notes}), flush=True)
"""


def venv_python(create: bool = True) -> Path | None:
    """The basic-pitch venv's python, created (pip from the registry) when missing."""
    py = VENV / "bin" / "python"
    if (VENV / ".installed").exists():
        return py
    if not create:
        return None
    print(f"peers: creating {VENV} with {' '.join(PIP)} (first use only)", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"peers: could not install basic-pitch ({e})", file=sys.stderr)
        return None
    (VENV / ".installed").touch()
    return py


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def audio_path(rec: dict, base: Path) -> str:
    p = Path(rec["audio"])
    return str(p if p.is_absolute() else (base / p).resolve())


def basic_pitch_notes(py: Path, paths: list[str]) -> tuple[dict[str, list], float]:
    """{audio path: [[start s, end s, pitch], ...]} for each distinct file, and the seconds
    basic-pitch spent (model loading excluded)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([str(py), "-c", WORKER], input="".join(json.dumps({"audio": p}) + "\n" for p in paths),
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"peers: basic-pitch failed:\n{proc.stderr[-2000:]}")
    out, seconds = {}, 0.0
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[r["audio"]], seconds = r["notes"], seconds + r["seconds"]
    return out, seconds


def clip_abc(notes: list) -> str:
    """basic-pitch's notes of one clip as ABC, the way a user would get it: 120 BPM, 4/4,
    quantised and written by abcscribe."""
    from abcscribe.core.abc import write_abc
    from abcscribe.core.midi import quantize
    from abcscribe.core.notes import TPQ, Note, Piece, Voice

    ticks = TPQ * 2  # per second at 120 BPM
    voice = Voice([Note(p, int(round(s * ticks)), max(1, int(round((e - s) * ticks)))) for s, e, p in notes])
    voice.sort()
    return write_abc(quantize(Piece(voices=[voice] if voice.notes else [])))


def predict(eval_path: Path, py: Path) -> tuple[list[dict], float, float]:
    """basic-pitch's records for the clips of ``eval_path`` (id, ref, pred, note_f1_raw), the
    audio seconds of the files it transcribed and its seconds."""
    from abcscribe.core.abc import read_abc
    from abcscribe.core.reward import ONSET_TOLERANCE, note_events, note_matches

    recs = read_jsonl(eval_path)
    paths = sorted({audio_path(r, eval_path.parent) for r in recs})
    notes, seconds = basic_pitch_notes(py, paths)
    import soundfile

    audio_seconds = sum(soundfile.info(p).duration for p in paths)
    out = []
    for r in recs:
        t0, dur = float(r.get("offset") or 0.0), float(r.get("duration") or 1e9)
        est = [(s - t0, e - t0, p) for s, e, p in notes[audio_path(r, eval_path.parent)] if t0 <= s < t0 + dur]
        ref = note_events(read_abc(r["abc"])[0])
        ev = [(p, s, e) for s, e, p in est]
        m = note_matches(ref, ev, ONSET_TOLERANCE)
        f1 = 1.0 if not ref and not ev else 2 * m / max(1, len(ref) + len(ev))
        out.append({"id": r.get("id"), "ref": r["abc"], "pred": clip_abc(est), "note_f1_raw": f1})
    return out, audio_seconds, seconds


def score(records: list[dict]) -> dict:
    """Means of note_f1 (or note_f1_raw), pitch and reward over scored records."""
    from abcscribe.core.reward import score as score_pair

    f1, pitch, reward = [], [], []
    for r in records:
        if r.get("error") or not r.get("pred"):
            continue
        s = score_pair(r["ref"], r["pred"])
        f1.append(r.get("note_f1_raw", s.note_f1))
        pitch.append(s.pitch)
        reward.append(s.reward)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"n": len(f1), "note_f1": mean(f1), "pitch": mean(pitch), "reward": mean(reward)}


def transcribe(model: str, eval_path: Path) -> tuple[list[dict], float]:
    cmd = [sys.executable, "-m", "abcscribe", "transcribe", "--model", model, str(eval_path)]
    if model != "baseline":
        cmd += ["--temperature", "0", "--max-new-tokens", "256", "--batch-size", "16"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return [json.loads(x) for x in proc.stdout.splitlines() if x.strip()], time.monotonic() - t0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        if len(argv) != 2:
            print("usage: peers.py predict EVAL.jsonl > PRED.jsonl", file=sys.stderr)
            return 2
        py = venv_python()
        if py is None:
            return 1
        recs, _, _ = predict(Path(argv[1]), py)
        for r in recs:
            print(json.dumps(r))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=HERE.parent / "runs" / "demo")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="the first 20 clips of each condition")
    args = ap.parse_args(argv)
    sets = [(c, args.run / "eval" / f"{c}.jsonl") for c in CONDITIONS]
    sets = [(c, p) for c, p in sets if p.exists() and p.stat().st_size]
    if not sets or not (args.run / "ppo" / "abcscribe.json").exists():
        print(f"peers: no demo run in {args.run} (run 'make demo' first)", file=sys.stderr)
        if args.json:
            print(json.dumps({"name": "peers", "figures": []}))
        return 1
    py = venv_python()
    figures, rows = [], []
    for cond, path in sets:
        if args.quick:
            tmp = path.with_suffix(".quick.jsonl")
            tmp.write_text("".join(x + "\n" for x in path.read_text().splitlines()[:20]))
            path = tmp
        clips = read_jsonl(path)
        clip_seconds = sum(float(r.get("duration") or 0) for r in clips)
        results = {}
        for system in ("ppo", "baseline"):
            model = "baseline" if system == "baseline" else str(args.run / system)
            recs, secs = transcribe(model, path)
            results[system] = {**score(recs), "audio_s_per_s": clip_seconds / secs}
        if py is not None:
            recs, audio_s, secs = predict(path, py)
            results["basic-pitch"] = {**score(recs), "audio_s_per_s": audio_s / max(secs, 1e-9)}
        for system, r in results.items():
            rows.append((cond, system, r))
        bp = results.get("basic-pitch")
        for system in ("ppo", "baseline"):
            r = results[system]
            figures.append({"metric": f"{cond}: {system} note F1", "value": round(r["note_f1"], 4),
                            "unit": "", "target": ">= 0.90 (demo)" if cond == "demo" and system == "ppo" else ""})  # fmt: skip
            if bp:
                figures.append({"metric": f"{cond}: {system} / basic-pitch note F1",
                                "value": round(r["note_f1"] / max(bp["note_f1"], 1e-9), 3),
                                "unit": "x", "target": ">= 1" if system == "ppo" else ""})  # fmt: skip
        if bp:
            figures.append({"metric": f"{cond}: basic-pitch note F1 (raw)", "value": round(bp["note_f1"], 4),
                            "unit": "", "target": ""})  # fmt: skip
    print(f"{'condition':10} {'system':12} {'n':>4} {'note F1':>8} {'pitch':>6} {'reward':>7} {'audio s/s':>9}")
    for cond, system, r in rows:
        print(f"{cond:10} {system:12} {r['n']:4d} {r['note_f1']:8.3f} {r['pitch']:6.3f} "
              f"{r['reward']:7.3f} {r['audio_s_per_s']:9.1f}")  # fmt: skip
    if args.json:
        print(json.dumps({"name": "peers", "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
