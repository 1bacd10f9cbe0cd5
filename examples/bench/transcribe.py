"""Speed of transcription on CPU: seconds of audio transcribed per wall-clock second, with the
``baseline`` (signal processing) and the ``tiny`` preset (the embedded default's composed model,
default size, untrained, sampling ``--max-new-tokens`` per window at most), at batch size 1 and 8.

    python examples/bench/transcribe.py [--json] [--quick] [--files 8] [--seconds 20]

The audio is O'Neill/Ryan folk tunes from music21's corpus rendered with the GM soundfont (or the
built-in synth), each cut to ``--seconds``; one window per file, so a batch of 8 holds the
windows of 8 files. Timing runs through ``core.transcribe.transcribe_items``, the path of
``abcscribe transcribe``: audio loading, beat tracking, generation, stitching, ABC writing. The
untrained model's end token is suppressed, so every window costs exactly ``--max-new-tokens``
tokens (256: about what 20 s of a reel takes with the tiny tokenizer); tokens generated per
second are printed too, since a trained model's rate scales with the length of its answers."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TARGET_BASELINE = 10.0  # audio s per s: a folder of songs in minutes on a laptop
TARGET_TINY = 1.0  # at least real time on CPU for the embedded default


def make_audio(folder: Path, n: int, seconds: float) -> list[tuple[Path, str]]:
    """``n`` rendered tunes of ``seconds`` each, with their reference ABC."""
    import music21

    from abcscribe.core.abc import read_abc, write_abc
    from abcscribe.core.audio import render, write_audio
    from abcscribe.core.notes import Tempo
    from abcscribe.core.qa import slice_piece

    ryan = Path(music21.__file__).parent / "corpus" / "ryansMammoth"
    out = []
    for i, name in enumerate(sorted(ryan.glob("*.abc"))[::97][:n]):
        piece, _ = read_abc(name.read_text())
        piece.tempos = [Tempo(0, 90.0 + 7 * i)]
        piece = slice_piece(piece, 0, int(piece.tick_at(seconds)))
        path = folder / f"{i:02d}.wav"
        write_audio(path, render(piece, 22050)[: int(seconds * 22050)], 22050)
        out.append((path, write_abc(piece)))
    return out


def run(model, files, batch_size: int, max_new_tokens: int) -> dict:
    from abcscribe.core.models.base import GenerationOptions
    from abcscribe.core.transcribe import Input, TranscribeOptions, transcribe_items

    opts = TranscribeOptions(
        generation=GenerationOptions(temperature=0.7, max_new_tokens=max_new_tokens, seed=0),
        batch_size=batch_size,
    )
    t0 = time.perf_counter()
    results = list(transcribe_items(model, [Input(p) for p, _ in files], opts))
    wall = time.perf_counter() - t0
    bad = [r for _, r in results if isinstance(r, Exception)]
    if bad:
        raise SystemExit(f"transcription failed: {bad[0]}")
    audio = sum(r.seconds for _, r in results)
    return {"audio_s": audio, "wall_s": wall, "rate": audio / wall, "results": [r for _, r in results]}


def tiny_model(files):
    from abcscribe.core.models import build_tiny

    records = [
        {"audio": str(p), "messages": [
            {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Transcribe this audio into ABC notation."}]},
            {"role": "assistant", "content": abc}]}
        for p, abc in files
    ]
    from abcscribe.core.models.common import one_thread_for_small_cpu_model

    lm = build_tiny(records)
    one_thread_for_small_cpu_model(lm)  # as load_transcriber does for 'abcscribe transcribe'
    # count the tokens generated (the untrained model's text is no tune, so its stitched ABC
    # says nothing about how much it wrote)
    # an untrained model ends its answer at random; with the end token suppressed every window
    # writes exactly --max-new-tokens, the cost of a transcription that long
    lm.suppress_ids = sorted(set(lm.suppress_ids) | set(lm.eos_ids))
    lm.generated_tokens = 0
    generate_ids = lm.generate_ids

    def counting(prompt, opts):
        ids = generate_ids(prompt, opts)
        lm.generated_tokens += int((ids != lm.tokenizer.pad_token_id).sum())
        return ids

    lm.generate_ids = counting
    return lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter files and tokens")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args()
    if args.quick:
        args.files, args.seconds, args.max_new_tokens = 8, 8.0, 64

    import torch

    from abcscribe.core.baseline import Baseline

    figures = []
    with tempfile.TemporaryDirectory() as d:
        files = make_audio(Path(d), args.files, args.seconds)
        baseline = Baseline()
        run(baseline, files[:1], 1, 1)  # warm-up: librosa's numba kernels compile once
        for bs in (1, 8):
            r = run(baseline, files, bs, 1)
            print(f"baseline  batch {bs}: {r['audio_s']:.0f} s of audio in {r['wall_s']:.1f} s "
                  f"= {r['rate']:.1f} audio s/s", file=sys.stderr)
            figures.append({"metric": f"baseline audio s/s (batch {bs})", "value": round(r["rate"], 2),
                            "unit": "audio s/s", "target": f">= {TARGET_BASELINE:g}"})
        lm = tiny_model(files)
        n_params = sum(p.numel() for p in lm.model.parameters())
        run(lm, files[:1], 1, 8)  # warm-up
        for bs in (1, 8):
            torch.manual_seed(0)
            lm.generated_tokens = 0
            r = run(lm, files, bs, args.max_new_tokens)
            tokens = lm.generated_tokens
            print(f"tiny ({n_params / 1e6:.1f} M params) batch {bs}: {r['audio_s']:.0f} s of audio in "
                  f"{r['wall_s']:.1f} s = {r['rate']:.2f} audio s/s (~{tokens / r['wall_s']:.0f} "
                  f"tokens generated per s, {args.max_new_tokens} per window)", file=sys.stderr)
            figures.append({"metric": f"tiny audio s/s (batch {bs}, {args.max_new_tokens} tokens/window)",
                            "value": round(r["rate"], 2), "unit": "audio s/s",
                            "target": f">= {TARGET_TINY:g}"})
    for f in figures:
        print(f"{f['metric']:<55} {f['value']:>8} {f['unit']:<10} target {f['target']}")
    if args.json:
        print(json.dumps({"name": "transcribe", "figures": figures}))


if __name__ == "__main__":
    main()
