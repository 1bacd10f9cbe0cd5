"""examples/report.py pairs each system's record with the same clip in every other system's file,
also when a condition's set holds one clip in two renderings under the same mkqa id (the demo's
`demo` and `voices` sets do)."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("demo_report", EXAMPLES / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(values: dict[str, list[float]], metric: str = "reward") -> list[dict]:
    """Records in a set's order: every id once per rendering, renderings one after the other,
    as examples/sets.py writes them."""
    out = []
    for rendering, vals in values.items():
        for i, v in enumerate(vals):
            out.append({"id": f"tune-{i}:000:transcribe", "path": f"{rendering}/tune-{i}.wav", metric: v})
    return out


def test_paired_difference_compares_each_clip_with_itself_in_every_rendering(report):
    sft = _set({"builtin": [0.9, 0.95, 0.85, 0.92], "timgm": [0.5, 0.55, 0.45, 0.6]})
    ppo = [{**r, "reward": r["reward"] + 0.01} for r in sft]  # better by 0.01 on every clip
    d = report.paired(ppo, sft)
    assert d["n"] == 8
    assert d["mean"] == pytest.approx(0.01)
    # the same gain on every clip: no spread, the interval is the gain itself
    assert d["ci"][0] == pytest.approx(0.01) and d["ci"][1] == pytest.approx(0.01)


def test_paired_difference_leaves_out_clips_one_system_did_not_score(report):
    sft = _set({"builtin": [0.9, 0.8], "timgm": [0.5, 0.4]})
    ppo = [{**r, "reward": r["reward"] - 0.1} for r in sft]
    ppo[3]["reward"] = None  # failed: no number
    d = report.paired(ppo, sft)
    assert d["n"] == 3 and d["mean"] == pytest.approx(-0.1)


def test_basic_pitch_raw_note_f1_is_that_of_the_same_rendering(report, tmp_path):
    run = tmp_path / "run"
    (run / "scores" / "demo").mkdir(parents=True)
    (run / "pred" / "demo").mkdir(parents=True)
    scores = _set({"builtin": [0.2, 0.3], "timgm": [0.4, 0.5]}, metric="note_f1")
    raw = _set({"builtin": [0.9, 0.8], "timgm": [0.1, 0.2]}, metric="note_f1_raw")
    for path, recs in ((run / "scores" / "demo" / "basic-pitch.jsonl", scores),
                       (run / "pred" / "demo" / "basic-pitch.jsonl", [{k: v for k, v in r.items() if k != "path"} for r in raw])):
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = report.condition_scores(run, "demo")["basic-pitch"]
    assert [r["note_f1"] for r in got] == [0.9, 0.8, 0.1, 0.2]


def _tune(voices: list[tuple[str, str]]) -> str:
    """A two-bar tune with one V: per (GM name, notes)."""
    body = "".join(f'V:{i} name="{name}"\n{notes}\n' for i, (name, notes) in enumerate(voices, 1))
    return "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\n" + body


def test_family_right_compares_each_reference_voice_with_the_voice_matched_by_pitch(report):
    ref = _tune([("Flute", "c2 d2 e2 f2 | g2 a2 b2 c'2 |"), ("Bassoon", "C,2 D,2 E,2 F,2 | G,2 A,2 B,2 C2 |")])
    # the predicted voices in the other order: matched by their notes, not by their place; the
    # low voice is right in family (Oboe is a reed like Bassoon), the high one is not (Violin)
    pred = _tune([("Oboe", "C,2 D,2 E,2 F,2 | G,2 A,2 B,2 C2 |"), ("Violin", "c2 d2 e2 f2 | g2 a2 b2 c'2 |")])
    same = _tune([("Piccolo", "c2 d2 e2 f2 | g2 a2 b2 c'2 |"), ("Bassoon", "C,2 D,2 E,2 F,2 | G,2 A,2 B,2 C2 |")])
    got = report.family_right([{"ref": ref, "pred": pred}, {"ref": ref, "pred": same},
                               {"ref": ref, "pred": "not a tune"}, {"ref": "", "pred": same}])
    # 1 + 2 + 0 of 3 x 2 voices; the unreadable reference is left out
    assert got == {"right": 3, "voices": 6}


def test_the_report_counts_the_family_right_per_system(report, tmp_path):
    run = tmp_path / "run"
    ref = _tune([("Violin", "c2 d2 e2 f2 | g2 a2 b2 c'2 |")])
    for system, name in (("sft", "Viola"), ("ppo", "Trumpet")):
        for d in ("scores", "pred"):
            (run / d / "demo").mkdir(parents=True, exist_ok=True)
        rec = {"id": "tune-0:000:transcribe", "ref": ref, "pred": _tune([(name, "c2 d2 e2 f2 | g2 a2 b2 c'2 |")])}
        (run / "pred" / "demo" / f"{system}.jsonl").write_text(json.dumps(rec) + "\n")
        (run / "scores" / "demo" / f"{system}.jsonl").write_text(json.dumps({"id": rec["id"], "reward": 0.5}) + "\n")
    assert report.main([str(run), "--examples", "0"]) == 0
    fams = json.loads((run / "report.json").read_text())["conditions"]["demo"]["family_right"]
    assert fams == {"sft": {"right": 1, "voices": 1}, "ppo": {"right": 0, "voices": 1}}
    assert "sft 1/1, ppo 0/1" in (run / "report.md").read_text()
