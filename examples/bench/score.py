"""Speed of the music reward (core.reward.score) on one core: pairs per second for realistic
pairs, reward only and with the note metrics.

    python examples/bench/score.py [--json] [--quick] [--pairs 400] [--profile]

A pair is a reference of 8-16 bars with 1-4 voices (melody, bass, chords, counter-melody; GM
programs; 4/4, 3/4 or 6/8) written by core.abc.write_abc, and a prediction that is a noisy copy
(wrong, dropped and added notes, tempo off by a few BPM, sometimes another instrument, sometimes
wrapped in prose and a ``` fence). Every pair has its own reference, so both ABC texts are read
each time ("distinct refs"); "ppo" scores 8 predictions per reference, as a PPO/GRPO group does,
so the reference is read once per group (core.reward caches it). Rates are pairs per CPU second
of this single-threaded process pinned to one core."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

TARGET_PAIRS_PER_S = 2000


def make_piece(rng: random.Random):
    from abcscribe.core.notes import TPQ, Meter, Note, Piece, Tempo, Voice

    num, den = rng.choice([(4, 4), (4, 4), (3, 4), (6, 8)])
    bar = num * TPQ * 4 // den
    bars = rng.randint(8, 16)
    scale = [0, 2, 4, 5, 7, 9, 11]
    tonic = rng.choice([55, 57, 60, 62, 64, 65])

    def deg(d, octave=0):
        return tonic + 12 * (d // 7 + octave) + scale[d % 7]

    def line(octave, durs, chord=False, rests=0.05):
        notes, t, d = [], 0, rng.randint(0, 6)
        while t < bars * bar:
            dur = min(rng.choice(durs), bars * bar - t)
            d = max(-7, min(10, d + rng.choice([-2, -1, -1, 0, 1, 1, 2])))
            if rng.random() >= rests:
                ps = [deg(d, octave), deg(d + 2, octave), deg(d + 4, octave)] if chord else [deg(d, octave)]
                notes += [Note(p, t, dur) for p in ps]
            t += dur
        return notes

    q, e, s = TPQ, TPQ // 2, TPQ // 4
    makers = [
        lambda: Voice(line(0, [e, e, q, s, s, 3 * e]), program=rng.choice([40, 73, 71, 56, 0])),
        lambda: Voice(line(-2, [q, 2 * q], rests=0.15), program=rng.choice([32, 33, 42, 58])),
        lambda: Voice(line(-1, [2 * q, q], chord=True, rests=0.1), program=rng.choice([0, 24, 48])),
        lambda: Voice(line(0, [q, e, e]), program=rng.choice([41, 68, 60, 65])),
    ]
    voices = [m() for m in makers[: rng.randint(1, 4)]]
    return Piece(voices=voices, tempos=[Tempo(0, float(rng.randint(60, 180)))],
                 meters=[Meter(0, num, den)])


def noisy_copy(piece, rng: random.Random):
    from abcscribe.core.notes import Note, Tempo

    p = piece.copy()
    for v in p.voices:
        out = []
        for n in v.notes:
            r = rng.random()
            if r < 0.05:
                continue  # dropped
            if r < 0.15:
                n.pitch += rng.choice([-2, -1, 1, 2, 12])
            out.append(n)
            if rng.random() < 0.04:
                out.append(Note(n.pitch + rng.choice([-3, 3]), n.start, n.duration))
        v.notes = out
        if rng.random() < 0.2:
            v.program = rng.randint(0, 127)
    if rng.random() < 0.5:
        p.tempos = [Tempo(0, max(20.0, p.bpm + rng.randint(-12, 12)))]
    return p


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from abcscribe.core.abc import write_abc

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = make_piece(rng)
        pred = write_abc(noisy_copy(ref, rng))
        if rng.random() < 0.2:
            pred = f"Here is the transcription:\n```abc\n{pred}```\nLet me know if you need more."
        pairs.append((write_abc(ref), pred))
    return pairs


def rate(fn, pairs, min_seconds: float) -> float:
    """Pairs per CPU second of fn over pairs (this process's CPU time, so other processes on a
    shared machine do not count against it), repeated until min_seconds have passed."""
    from abcscribe.core import reward

    done, t0 = 0, time.process_time()
    while True:
        reward._read_reference_cached.cache_clear()
        fn(pairs)
        done += len(pairs)
        el = time.process_time() - t0
        if el >= min_seconds:
            return done / el


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--quick", action="store_true", help="fewer pairs, shorter timing")
    ap.add_argument("--pairs", type=int, default=None, help="number of distinct pairs (400)")
    ap.add_argument("--profile", action="store_true", help="print where the time goes")
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    except (AttributeError, OSError):
        pass
    from abcscribe.core import reward
    from abcscribe.core.abc import read_abc

    n = args.pairs or (100 if args.quick else 400)
    secs = 1.0 if args.quick else 4.0
    pairs = make_pairs(n)
    voices = sum(len(read_abc(r)[0].voices) for r, _ in pairs) / n
    notes = sum(read_abc(r)[0].note_count for r, _ in pairs) / n
    print(f"{n} pairs, {voices:.1f} voices and {notes:.0f} notes per reference on average",
          file=sys.stderr)

    def reward_only(ps):
        for r, p in ps:
            reward.score(r, p, note_metrics=False)

    def with_notes(ps):
        for r, p in ps:
            reward.score(r, p, note_metrics=True)

    group = [(r, p) for r, _ in pairs[: max(1, n // 8)] for _, p in pairs[:8]]

    def read_only(ps):
        for r, p in ps:
            read_abc(r)
            read_abc(p)

    figures = [
        ("reward only, distinct refs", rate(reward_only, pairs, secs), TARGET_PAIRS_PER_S),
        ("reward + note metrics, distinct refs", rate(with_notes, pairs, secs), None),
        ("reward only, ppo groups of 8 per ref", rate(reward_only, group, secs), TARGET_PAIRS_PER_S),
        ("reading both ABC texts only", rate(read_only, pairs, secs), None),
    ]
    for name, v, target in figures:
        print(f"{name:<40} {v:9.0f} pairs/s" + (f"   (target >= {target})" if target else ""))

    if args.profile:
        import cProfile
        import pstats

        reward._read_reference_cached.cache_clear()
        prof = cProfile.Profile()
        prof.enable()
        reward_only(pairs)
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)

    if args.json:
        print(json.dumps({"name": "score", "figures": [
            {"metric": name, "value": round(v, 1), "unit": "pairs/s",
             "target": f">= {t}" if t else None} for name, v, t in figures]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
