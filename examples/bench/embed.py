"""Real-time factor (seconds of audio per wall-clock second, one CPU core) of the embedding
encoders and of rendering with each engine.

    python examples/bench/embed.py [--json] [--quick]

The audio is a 30 s four-voice piece (piano melody, strings, bass, drums at 120 BPM) rendered
by the built-in synthesiser; --quick uses 10 s. Each figure is the best of three timed runs
after a warm-up run. The tiny hf: encoder is a 2-layer, 64-wide Whisper built from a config
(standard 30 s window, 80 mel bins) and loaded back through hf:<dir>, so the figure measures the
chunking, feature extraction and model call path, not a real model's size."""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def test_piece(seconds: float):
    from abcscribe.core.notes import TPQ, Note, Piece, Tempo, Voice

    rng = np.random.default_rng(0)
    beats = int(seconds * 2)  # 120 BPM
    melody, t = [], 0
    while t < beats * TPQ:
        d = int(rng.choice([TPQ // 2, TPQ, TPQ // 4 * 3]))
        melody.append(Note(int(rng.integers(64, 80)), t, d, 90))
        t += d
    chords = [Note(p + 12 * (b // 4 % 2), b * TPQ, TPQ, 70) for b in range(0, beats, 2)
              for p in (48, 52, 55)]  # fmt: skip
    bass = [Note(36 + (b // 4) % 5, b * TPQ, TPQ, 90) for b in range(beats)]
    drums = [Note(36 if b % 2 == 0 else 38, b * TPQ, TPQ // 2, 100) for b in range(beats)]
    drums += [Note(42, b * TPQ // 2, TPQ // 4, 60) for b in range(beats * 2)]
    return Piece([Voice(melody, program=0), Voice(chords, program=48), Voice(bass, program=33),
                  Voice(drums, drum=True)], tempos=[Tempo(0, 120.0)])  # fmt: skip


def best_rtf(fn, seconds: float, repeats: int = 3) -> float:
    fn()  # warm-up: imports, numba/librosa caches, model load paths
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return seconds / best


def tiny_whisper(root: str) -> str:
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=64, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
        num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=2,
        encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=16)  # fmt: skip
    WhisperModel(cfg).save_pretrained(root)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root)
    return f"hf:{root}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    ap.add_argument("--quick", action="store_true", help="10 s of audio instead of 30 s")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from abcscribe.core.audio import fluidsynth_available, render, resample
    from abcscribe.core.encoders import get_encoder

    seconds = 10.0 if args.quick else 30.0
    piece = test_piece(seconds)
    dur = piece.duration_seconds
    figures = []

    def figure(metric, value, target):
        figures.append({"metric": metric, "value": round(value, 1), "unit": "x real time",
                        "target": target})  # fmt: skip
        print(f"{metric:28s} {value:10.1f} x real time" + (f"   (target >= {target[2:]})"
                                                          if target else ""))  # fmt: skip

    figure("render builtin", best_rtf(lambda: render(piece, 22050, "builtin"), dur), None)
    if fluidsynth_available():
        figure("render fluidsynth", best_rtf(lambda: render(piece, 22050, "fluidsynth"), dur),
               None)  # fmt: skip
    else:
        print("render fluidsynth: skipped (fluidsynth or a GM soundfont not installed)")

    audio = resample(render(piece, 22050, "builtin"), 22050, 16000)
    audio_s = audio.size / 16000
    tmp = tempfile.mkdtemp(prefix="abcscribe-bench-")
    try:
        for name, target in (("cqt", ">=100"), ("mel", ">=100"), ("crepe-tiny", ">=5"),
                             (tiny_whisper(tmp), None)):  # fmt: skip
            enc = get_encoder(name)
            label = "hf: tiny whisper" if name.startswith("hf:") else name
            figure(f"embed {label}", best_rtf(lambda: enc.encode(audio), audio_s), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # short clips, as mkqa cuts them: most of a CQT's time is building its filter bank, which
    # abcscribe has librosa keep on disk (core.audio.load_librosa); the peer is librosa's default,
    # building it on every call (LIBROSA_CACHE_LEVEL=0), each in a fresh process
    clip = {}
    for label, env in (("built each call", {"LIBROSA_CACHE_LEVEL": "0"}), ("kept", {})):
        clip[label] = short_clip_rtf(env)
        figure(f"embed cqt 2.5 s, bank {label}", clip[label], None)
    print(f"{'cqt 2.5 s clips: kept / built':28s} {clip['kept'] / clip['built each call']:10.2f} x")
    if args.json:
        print(json.dumps({"name": "embed", "figures": figures}))


SHORT_CLIP = """
import sys, time, numpy as np
from abcscribe.core.encoders import CQTEncoder
enc, audio = CQTEncoder(), np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.1
enc.encode(audio)
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(20):
        enc.encode(audio)
    best = min(best, time.perf_counter() - t0)
print(20 * 2.5 / best)
"""


def short_clip_rtf(env: dict[str, str]) -> float:
    """Real-time factor of the CQT encoder on 2.5 s clips in a fresh process with ``env``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SHORT_CLIP], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(out.stdout.split()[-1])


if __name__ == "__main__":
    main()
