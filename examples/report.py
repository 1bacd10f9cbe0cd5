"""Write the demo's report from a run folder: a table of held-out scores with 95% bootstrap
intervals for each system under each condition, the paired ppo - sft difference, training
curves, and examples.

    python examples/report.py runs/demo

Reads RUN/scores/<condition>/<system>.jsonl (the output of `abcscribe score`; basic-pitch's
when examples/bench/peers.py made it), RUN/sft/log.jsonl, RUN/ppo/log.jsonl and
RUN/encoder/pretrain.json; writes RUN/report.md, RUN/report.json and RUN/*.png; prints one table
per condition."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from abcscribe.core.errors import UserError
from abcscribe.core.reward import family_matches, read_prediction, read_reference, summarize

SYSTEMS = ("baseline", "untrained", "sft", "ppo-lm", "ppo", "sft-greedy", "ppo-greedy")
METRICS = ("reward", "pitch", "metre", "tempo", "instrument", "note_f1")
LOSSES = {"pitch", "metre", "tempo", "instrument"}  # seed components are losses (lower is better)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RESAMPLES = 2000


def interval(stats: dict, m: str) -> dict:
    """{"mean", "ci"} of metric ``m`` from ``core.reward.summarize`` (NaN when nothing scored)."""
    st = stats.get(m)
    if st is None:
        return {"mean": float("nan"), "ci": [float("nan"), float("nan")]}
    return {"mean": st["mean"], "ci": st["ci95"]}


def summarise(records: list[dict]) -> dict:
    stats = summarize(records, metrics=METRICS, resamples=RESAMPLES)
    out = {"n": len(records), **{m: interval(stats, m) for m in METRICS}}
    out["errors"] = sum(1 for r in records if r.get("error"))
    return out


def key(r: dict) -> str:
    return str(r.get("id") or r.get("path") or r.get("pred_path"))


def keyed(records: list[dict]) -> dict[str, dict]:
    """{key: record} with one key per record: its id, and ``id@n`` for the n-th record of an id
    seen before. A condition's set can hold one clip in several renderings, all with the clip's
    mkqa id, and every system writes the set's records in its order, so the n-th record of an id
    is the same audio in each system's file."""
    seen: dict[str, int] = {}
    out = {}
    for r in records:
        k = key(r)
        seen[k] = seen.get(k, 0) + 1
        out[k if seen[k] == 1 else f"{k}@{seen[k]}"] = r
    return out


def paired(a: list[dict], b: list[dict], metric: str = "reward") -> dict:
    """Mean of (a - b) over items both scored, with a paired bootstrap interval."""
    bmap = {k: r for k, r in keyed(b).items() if isinstance(r.get(metric), (int, float))}
    diffs = [{"d": float(r[metric]) - float(bmap[k][metric])} for k, r in keyed(a).items()
             if isinstance(r.get(metric), (int, float)) and k in bmap]
    return {"n": len(diffs), **interval(summarize(diffs, metrics=("d",), resamples=RESAMPLES), "d")}


def plot_curves(run: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    sft = read_jsonl(run / "sft" / "log.jsonl")
    pts = [(r.get("step"), r["loss"]) for r in sft if "loss" in r and r.get("step") is not None]
    ev = [(r.get("step"), r["eval_loss"]) for r in sft if "eval_loss" in r]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*zip(*pts), label="train loss")
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval loss")
        ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_title("sft"), ax.legend()
        fig.tight_layout(), fig.savefig(run / "sft_loss.png", dpi=100), plt.close(fig)
        made.append("sft_loss.png")
    ppo = read_jsonl(run / "ppo" / "log.jsonl")
    rw = [(r["step"], r["reward_mean"]) for r in ppo if "reward_mean" in r and "step" in r]
    kl = [(r["step"], r["kl"]) for r in ppo if "kl" in r and "step" in r]
    if rw:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*zip(*rw), label="reward (sampled)")
        ax.set_xlabel("step"), ax.set_ylabel("reward"), ax.set_title("ppo")
        if kl:
            ax2 = ax.twinx()
            ax2.plot(*zip(*kl), color="tab:red", label="KL")
            ax2.set_ylabel("KL")
        fig.tight_layout(), fig.savefig(run / "ppo_reward_kl.png", dpi=100), plt.close(fig)
        made.append("ppo_reward_kl.png")
    return made


def engraved_pair(run: Path, name: str, ref: str, pred: str) -> str:
    """Reference and transcription engraved side by side (abcm2ps SVGs under RUN/engraved/), as
    a markdown line; empty when abcm2ps is missing or cannot engrave either."""
    from abcscribe.core.engrave import svg_pages
    from abcscribe.core.errors import UserError

    out = run / "engraved"
    cells = []
    for part, abc in (("reference", ref), ("transcription", pred)):
        try:
            page = svg_pages(str(abc or ""))[0]
        except UserError:
            return ""
        path = out / f"{name.replace('/', '_')}.{part}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
        cells.append(f'<img src="{path.relative_to(run)}" alt="{part}" width="49%">')
    return " ".join(cells)


def fmt(s: dict) -> str:
    lo, hi = s["ci"]
    return f"{s['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


CONDITIONS = {
    "demo": "Held-out tunes through the training renderers (built-in synthesiser, TimGM6mb)",
    "soundfont": "Held-out tunes through a soundfont no training clip used (FluidR3_GM)",
    "voices": "Held-out chorales, each voice its own instrument (training renderers)",
}
PEER = "basic-pitch"


def condition_scores(run: Path, cond: str | None) -> dict[str, list[dict]]:
    """{system: score records} of one condition (RUN/scores/COND/SYSTEM.jsonl), or of a run
    made before conditions existed (RUN/scores/SYSTEM.jsonl). basic-pitch's note_f1 is its raw
    note events' (note_f1_raw in its predictions), not that of its quantised ABC."""
    folder = run / "scores" / cond if cond else run / "scores"
    out = {s: read_jsonl(folder / f"{s}.jsonl") for s in (*SYSTEMS, PEER)}
    if out.get(PEER):
        raw = {k: p.get("note_f1_raw") for k, p in keyed(read_jsonl(run / "pred" / cond / f"{PEER}.jsonl")).items()}
        out[PEER] = [{**r, "note_f1": raw.get(k, r.get("note_f1"))} for k, r in keyed(out[PEER]).items()]
    return {s: r for s, r in out.items() if r}


#: the paired differences the report gives (report.json's names): ppo - sft as the demo
#: transcribes (best of BEST_OF candidates, each model drawing its own samples) and between the
#: two models' greedy texts (nothing sampled: the models' own difference)
PAIRS = {"ppo_minus_sft": ("ppo", "sft"), "ppo_minus_sft_greedy": ("ppo-greedy", "sft-greedy")}


def differences(d: dict[str, dict]) -> str:
    """The report's sentence of paired differences (``PAIRS`` names -> :func:`paired`)."""
    words = {"ppo_minus_sft": "", "ppo_minus_sft_greedy": "; between their greedy texts (nothing sampled) "}
    return "".join(f"{words[k]}{x['mean']:+.4f} [{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}] over {x['n']} clips"
                   for k, x in d.items()) + "."


def family_right(preds: list[dict]) -> dict:
    """{"right", "voices"}: over a system's predictions ("ref" and "pred" ABC), the reference
    voices whose matched predicted voice (as the reward matches voices) is of the same GM family.
    A clip whose reference cannot be read is left out."""
    right = voices = 0
    for r in preds:
        try:
            ref = read_reference(r["ref"])
        except (KeyError, UserError):
            continue
        a, b = family_matches(ref, read_prediction(r.get("pred"))[0])
        right, voices = right + a, voices + b
    return {"right": right, "voices": voices}


def table_md(table: dict) -> str:
    lines = ["| system | n | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 2)]
    for s, t in table.items():
        lines.append(f"| {s} | {t['n']} | " + " | ".join(fmt(t[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def examples_md(run: Path, cond: str | None, scores: list[dict], n: int) -> list[str]:
    pred = run / "pred" / cond / "ppo.jsonl" if cond else run / "pred" / "ppo.jsonl"
    texts = keyed(read_jsonl(pred))
    md = []
    for k, r in list(keyed(scores).items())[:n]:
        r = {**texts.get(k, {}), **r}
        md += [f"### {k} (reward {r.get('reward', float('nan')):.3f})", "",
               "Reference:", "```", str(r.get("ref", "")).strip(), "```",
               "Transcription:", "```", str(r.get("pred", "")).strip(), "```", "",
               engraved_pair(run, f"{cond or 'demo'}/{k}", r.get("ref", ""), r.get("pred", "")), ""]
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write report.md/report.json for a demo run.")
    ap.add_argument("run", type=Path)
    ap.add_argument("--examples", type=int, default=2)
    args = ap.parse_args(argv)
    run = args.run

    conds = [c for c in CONDITIONS if (run / "scores" / c).is_dir()] or [None]
    report: dict = {"conditions": {}}
    md = [f"# abcscribe demo report ({run.name})", "",
          "Held-out test clips; mean with 95% bootstrap interval. `reward` is the seed's "
          "(higher is better); pitch, metre, tempo and instrument are its losses (lower is "
          "better); note_f1 is onset F1 (50 ms; basic-pitch: its raw note events, while its "
          "reward and losses are those of its notes quantised to ABC at 120 BPM). untrained, sft "
          "and ppo are revised by ear (`transcribe --revise`, the default: notes checked "
          "against what the note encoder hears); ppo-lm is the ppo model's own notes "
          "(`--no-revise`); sft-greedy and ppo-greedy are each model's greedy text alone, revised "
          "by ear (`--best-of 1`): nothing is sampled, so their difference is the models' own.", ""]
    # every condition's clips, for ppo - sft and ppo-greedy - sft-greedy
    pooled: dict[str, list[dict]] = {s: [] for s in ("ppo", "sft", "ppo-greedy", "sft-greedy")}
    for cond in conds:
        scores = condition_scores(run, cond)
        if not scores:
            continue
        for s in pooled:
            pooled[s] += [{**r, "id": f"{cond}/{key(r)}"} for r in scores.get(s, [])]
        table = {s: summarise(r) for s, r in scores.items()}
        entry: dict = {"systems": table}
        for name, (a, b) in PAIRS.items():
            if a in scores and b in scores:
                entry[name] = {m: paired(scores[a], scores[b], m) for m in ("reward", "note_f1")}
        report["conditions"][cond or "demo"] = entry
        tab = table_md(table)
        md += [f"## {cond or 'demo'}: {CONDITIONS.get(cond or 'demo')}", "", tab, ""]
        print(f"{cond or 'demo'}:\n{tab}")
        fams = {s: family_right(read_jsonl(run / "pred" / cond / f"{s}.jsonl" if cond else run / "pred" / f"{s}.jsonl"))
                for s in scores}
        entry["family_right"] = {s: f for s, f in fams.items() if f["voices"]}
        if entry["family_right"]:
            line = ("Instrument in the right GM family (each reference voice against the predicted "
                    "voice the reward matches it with): " + ", ".join(
                        f"{s} {f['right']}/{f['voices']}" for s, f in entry["family_right"].items()) + ".")
            md += [line, ""]
            print(line)
        if "ppo_minus_sft" in entry:
            line = "Paired difference ppo - sft in reward: " + differences(
                {k: entry[k]["reward"] for k in PAIRS if k in entry})
            md += [line, ""]
            print(line)
        if "ppo" in scores and args.examples:
            md += [f"### Examples ({cond or 'demo'}, ppo vs reference)", ""]
            md += examples_md(run, cond, scores["ppo"], args.examples)
    if not report["conditions"]:
        print(f"report: no scores under {run}/scores", file=sys.stderr)
        return 1
    if len(report["conditions"]) > 1 and pooled["ppo"] and pooled["sft"]:
        for name, (a, b) in PAIRS.items():
            if pooled[a] and pooled[b]:
                report[name] = paired(pooled[a], pooled[b])
        line = "Paired difference ppo - sft in reward over every condition's clips: " + differences(
            {k: report[k] for k in PAIRS if k in report})
        md += ["## All conditions", "", line, ""]
        print(line)
    timing = run / "timing.json"
    if timing.exists():
        report["timing"] = json.loads(timing.read_text())
    pretrain = run / "encoder" / "pretrain.json"
    if pretrain.exists():
        report["encoder"] = json.loads(pretrain.read_text())
        md += ["## The note encoder", "", "Pretrained on the training clips' frame-level notes; on "
               "val clips: " + ", ".join(f"{k} {v}" for k, v in report["encoder"].items()), ""]
    report["plots"] = plot_curves(run)
    for p in report["plots"]:
        md += [f"![{p}]({p})", ""]
    (run / "report.md").write_text("\n".join(md))
    (run / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
