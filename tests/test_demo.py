"""The experiment Makefile end to end at a tiny size: every step runs as the plain abcscribe
command a user would type, and the report holds a row per system with numbers from the run."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_examples_makefile_runs_every_stage_and_writes_the_report(tmp_path):
    run = tmp_path / "run"
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = [  # two steps at a time, as `make demo` runs it
        "make", "-C", str(ROOT / "examples"), "demo", "-j2", f"RUN={run}", "PIECES=24", "CHORALES=3",
        "PRETRAIN_STEPS=20", "SFT_STEPS=30", "PPO_STEPS=1", "EVAL_CLIPS=6", "VOICES_CHORALES=1",
        "UNSEEN_CHORALES=1",
        f"PYTHON={sys.executable}", "ABCSCRIBE=abcscribe", "BASIC_PITCH=",
        "PPO_ARGS=--batch-size 2 --samples-per-prompt 2 --max-new-tokens 48 --mini-batch-size 4",
        "DECODE=--temperature 0 --max-new-tokens 96 --batch-size 8", "BEST_OF=2",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((run / "report.json").read_text())
    # the tunes' conditions: the training renderers, and a soundfont no training clip used
    for cond in ("demo", "soundfont"):
        entry = report["conditions"][cond]
        assert set(entry["systems"]) == {"baseline", "untrained", "sft", "ppo-lm", "ppo", "sft-greedy",
                                         "ppo-greedy"}, cond
        for name, row in entry["systems"].items():
            assert row["n"] == 6, (cond, name)
            assert 0.0 <= row["reward"]["mean"] <= 1.0
            lo, hi = row["reward"]["ci"]
            assert lo <= row["reward"]["mean"] <= hi
        assert entry["ppo_minus_sft"]["reward"]["n"] == entry["ppo_minus_sft_greedy"]["reward"]["n"] == 6
    # the voices condition: the run's test chorales and VOICES_CHORALES more that nothing of the
    # run (nor `make unseen`) uses, through both training renderers
    voices = [json.loads(x) for x in (run / "eval" / "voices.jsonl").read_text().splitlines()]
    more = [r for r in voices if "voices-test" in r["audio"]]
    assert more and all(r["split"] == "test" and r["piece"].startswith("bach-") for r in more)
    assert {Path(r["audio"]).parent.name for r in more} == {"data", "sf"}
    assert not {r["piece"] for r in more} & {p.stem for p in (run / "data").glob("*.mid")}
    assert report["conditions"]["voices"]["ppo_minus_sft"]["reward"]["n"] == len(voices)
    assert report["ppo_minus_sft"]["n"] == 12 + len(voices)  # every condition's clips together
    assert report["ppo_minus_sft_greedy"]["n"] == 12 + len(voices)
    # ppo-greedy is ppo's greedy text (ppo-lm's) revised by ear, which keeps the text's metre
    metres = lambda system: [re.findall(r"^M:.*$", json.loads(x)["abc"], re.M) for x in
                             (run / "pred" / "demo" / f"{system}.jsonl").read_text().splitlines()]
    assert len(metres("ppo-greedy")) == 6 and metres("ppo-greedy") == metres("ppo-lm")
    # the soundfont clips are rendered by another soundfont than the training ones, of test pieces only
    train_sf = {json.loads(x)["audio"] for x in (run / "qa-train-sf" / "train.jsonl").read_text().splitlines()}
    test_sf = [json.loads(x) for x in (run / "eval" / "soundfont.jsonl").read_text().splitlines()]
    assert all("test-sf" in r["audio"] and r["split"] == "test" for r in test_sf)
    assert not {Path(r["audio"]).name for r in test_sf} & {Path(a).name for a in train_sf}
    # the third training renderer holds the training and val pieces only, and its clips train
    sf2 = [json.loads(x) for x in (run / "qa" / "train.all.jsonl").read_text().splitlines()]
    sf2 = [r for r in sf2 if "train-sf2" in r["audio"]]
    assert sf2 and all(r["split"] == "train" for r in sf2)
    sf2_test = run / "qa-train-sf2" / "test.jsonl"
    assert not sf2_test.exists() or not sf2_test.read_text().strip()
    # the note encoder was pretrained, and the models read it
    assert report["encoder"]["steps"] == 20 and "val_onset_f1" in report["encoder"]
    assert (run / "ppo" / "note_encoder" / "model.safetensors").is_file()
    assert "sft_loss.png" in report["plots"] and (run / "sft_loss.png").stat().st_size > 1000
    md = (run / "report.md").read_text()
    assert "| ppo |" in md and "Paired difference ppo - sft" in md and "## soundfont" in md
    # an interrupted run resumes: nothing is redone when everything is there
    stamps = {p: p.stat().st_mtime_ns for p in (run / "sft" / "abcscribe.json", run / "ppo" / "abcscribe.json")}
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "abcscribe sft" not in again.stdout and "abcscribe render" not in again.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert "| ppo |" in again.stdout or "ppo " in again.stdout  # the table is printed again
    # ppo's prompts are the val clips, each chorale clip PPO_CHORALES (8) times, the tunes' clips
    # drawn again (about as many) in the metres of the training clips
    ids = lambda path: [json.loads(x)["id"] for x in path.read_text().splitlines()]
    val, ppo = ids(run / "qa" / "val.all.jsonl"), ids(run / "qa" / "ppo.jsonl")
    assert sorted(i for i in ppo if i.startswith("bach-")) == sorted(
        i for i in val if i.startswith("bach-") for _ in range(8))
    tunes = [i for i in ppo if not i.startswith("bach-")]
    assert tunes and set(tunes) <= set(val)
    assert abs(len(tunes) - sum(not i.startswith("bach-") for i in val)) <= 3
    # settings are chosen on pieces no model of the run trained on: `make unseen` prints sft and
    # ppo side by side on clips of the tunes and chorales after the run's own
    unseen = subprocess.run([*args[:3], "unseen", *args[4:], "UNSEEN_TUNES=3", "UNSEEN_CHORALES=1",
                             "UNSEEN_CLIPS=4"], capture_output=True, text=True, env=env, timeout=600)
    assert unseen.returncode == 0, unseen.stdout[-3000:] + unseen.stderr[-3000:]
    lines = (run / "unseen" / "report.txt").read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [
        [kind, metric, "n=4"] for kind in ("tunes", "chorales") for metric in ("reward", "note_f1")]
    assert all("ppo - sft" in line for line in lines) and lines[0] in unseen.stdout
    mine = {p.name for p in (run / "data").glob("*.mid")}
    theirs = {p.name for p in (run / "unseen" / "data").glob("*.mid")}
    assert len(theirs) == 4 and not mine & theirs and not theirs & {f"{r['piece']}.mid" for r in more}
    # `make seeds`: first sft against itself transcribed with another sampling seed, then ppo
    # again with another seed, and ppo - sft of each on every condition's test clips, over all of
    # them, on the unseen clips, and between the models' greedy texts; the run's own ppo (seed 0)
    # first, its figures those of the report
    seeds = subprocess.run([*args[:3], "seeds", *args[4:], "UNSEEN_TUNES=3", "UNSEEN_CHORALES=1",
                            "UNSEEN_CLIPS=4", "PPO_SEEDS=1"], capture_output=True, text=True, env=env, timeout=600)
    assert seeds.returncode == 0, seeds.stdout[-3000:] + seeds.stderr[-3000:]
    lines = (run / "seeds.txt").read_text().splitlines()
    conds, metrics = ("demo", "soundfont", "voices", "all"), ("reward", "note_f1")
    kinds = (*conds, "unseen-tunes", "unseen-chorales", *(f"greedy-{c}" for c in conds))
    assert [line.split()[:2] for line in lines] == [[c, m] for c in conds for m in metrics] + [
        [kind, metric] for _ in ("ppo", "ppo-seed1") for kind in kinds for metric in metrics]
    floor, lines = lines[:8], lines[8:]
    assert all("sft-resampled - sft" in line for line in floor)
    assert all("ppo - sft" in line for line in lines[:12]) and all("ppo-seed1 - sft" in line for line in lines[20:32])
    assert all("ppo-greedy - sft-greedy" in line for line in lines[12:20])
    assert all("ppo-seed1-greedy - sft-greedy" in line for line in lines[32:])
    for line, pooled in ((lines[6], report["ppo_minus_sft"]), (lines[18], report["ppo_minus_sft_greedy"])):
        assert line.split()[2] == f"n={pooled['n']}"
        assert f"{pooled['mean']:+.4f} [{pooled['ci'][0]:+.4f}, {pooled['ci'][1]:+.4f}]" in line
    unseen_lines = (run / "unseen" / "report.txt").read_text().splitlines()  # tunes, then chorales
    assert [x.split()[1:] for x in lines[8:12]] == [x.split()[1:] for x in unseen_lines]
    trained = {d: json.loads((run / d / "abcscribe.json").read_text())["ppo"] for d in ("ppo", "ppo-seed1")}
    assert [(t["config"]["seed"], t["steps"]) for t in trained.values()] == [(0, 1), (1, 1)]
    assert {k: v for k, v in trained["ppo"]["config"].items() if k != "seed"} == {
        k: v for k, v in trained["ppo-seed1"]["config"].items() if k != "seed"}
