"""`abcscribe score` as a user runs it: files, folders, JSONL on stdin, summaries, errors."""

import json
import math

import pytest

REF = """X:1
T:Reel
M:4/4
L:1/8
Q:1/4=112
K:D
V:1 name="Violin"
%%MIDI program 40
dfaf gfed|cdec A2 AB|dfaf gfed|cAGE D4|]
V:2 name="Acoustic Guitar (nylon)"
%%MIDI program 24
[DFA]4 [GBd]4|[Ace]4 [Ace]4|[DFA]4 [GBd]4|[Ace]4 [DFA]4|]
"""
SLOWER = REF.replace("Q:1/4=112", "Q:1/4=100")
WRONG_NOTES = REF.replace("dfaf gfed|cdec", "dfgf gfed|cdBc")

METRICS = ["reward", "loss", "pitch", "metre", "tempo", "instrument", "rhythm", "note_f1",
           "note_precision", "note_recall", "note_f1_offset", "parse_warnings"]


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    (ref / "set1").mkdir(parents=True)
    (pred / "set1").mkdir(parents=True)
    (ref / "a.abc").write_text(REF)
    (pred / "a.abc").write_text(REF)
    (ref / "set1" / "b.abc").write_text(REF)
    (pred / "set1" / "b.abc").write_text(SLOWER)
    (ref / "set1" / "c.abc").write_text(REF)
    (pred / "set1" / "c.abc").write_text("Sorry, I cannot transcribe this.")
    return ref, pred


def test_one_pair_of_files(cli, tmp_path):
    (tmp_path / "ref.abc").write_text(REF)
    (tmp_path / "pred.abc").write_text(WRONG_NOTES)
    p = cli("score", "--ref", tmp_path / "ref.abc", "--pred", tmp_path / "pred.abc")
    assert p.returncode == 0, p.stderr
    [rec] = records(p.stdout)
    assert list(rec)[:3] == ["id", "ref_path", "pred_path"]
    assert all(k in rec for k in METRICS)
    assert 0 < rec["pitch"] < 0.5 and rec["tempo"] == 0 and rec["instrument"] == 0
    assert rec["reward"] == pytest.approx(1 - rec["loss"]) and rec["reward"] < 1
    assert p.stderr == ""  # stdout is data; nothing else to say


def test_folders_pair_by_relative_path_in_sorted_order(cli, folders):
    ref, pred = folders
    p = cli("score", "--ref", ref, "--pred", pred)
    assert p.returncode == 0, p.stderr
    recs = records(p.stdout)
    assert [r["id"] for r in recs] == ["a.abc", "set1/b.abc", "set1/c.abc"]
    a, b, c = recs
    assert a["reward"] == 1.0
    assert 0 < b["tempo"] < 1 and b["pitch"] == 0 and b["reward"] == pytest.approx(1 - 0.15 * b["tempo"])
    assert c["reward"] == 0.0 and c["parse_warnings"] >= 1


def test_missing_prediction_is_a_failed_pair_and_the_rest_go_on(cli, folders):
    ref, pred = folders
    (ref / "z.abc").write_text(REF)
    (pred / "orphan.abc").write_text(REF)
    p = cli("score", "--ref", ref, "--pred", pred)
    assert p.returncode == 1
    recs = records(p.stdout)
    assert len(recs) == 4 and "error" in recs[-1] and "reward" not in recs[-1]
    assert "z.abc" in recs[-1]["error"]
    assert "1 prediction(s)" in p.stderr and "Traceback" not in p.stderr


def test_jsonl_on_stdin_text_and_paths_with_fields_passed_through(cli, tmp_path):
    (tmp_path / "ref.abc").write_text(REF)
    (tmp_path / "pred.abc").write_text(SLOWER)
    lines = [
        {"id": "t1", "model": "tiny", "ref": REF, "pred": f"Here you go:\n```abc\n{REF}```"},
        {"id": "t2", "ref_path": str(tmp_path / "ref.abc"), "pred_path": str(tmp_path / "pred.abc")},
        {"id": "t3", "ref": REF, "pred": ""},
    ]
    p = cli("score", input="\n".join(json.dumps(x) for x in lines) + "\n")
    assert p.returncode == 0, p.stderr
    r1, r2, r3 = records(p.stdout)
    assert r1["id"] == "t1" and r1["model"] == "tiny" and r1["reward"] == 1.0
    assert "ref" not in r1 and "pred" not in r1  # the ABC text is not echoed
    assert r2["ref_path"] == str(tmp_path / "ref.abc") and r2["tempo"] > 0
    assert r3["reward"] == 0.0


def test_bad_records_fail_alone(cli):
    lines = [{"id": "no-pred", "ref": REF}, {"id": "bad-ref", "ref": "hello", "pred": REF},
             {"id": "ok", "ref": REF, "pred": REF}]
    p = cli("score", input="\n".join(json.dumps(x) for x in lines))
    assert p.returncode == 1
    a, b, c = records(p.stdout)
    assert "pred" in a["error"] and "reference" in b["error"] and c["reward"] == 1.0


def test_weights_option(cli):
    line = json.dumps({"ref": REF, "pred": SLOWER})
    plain = records(cli("score", input=line).stdout)[0]
    only_tempo = records(cli("score", "--weights", "tempo=1", input=line).stdout)[0]
    assert only_tempo["loss"] == pytest.approx(plain["tempo"])
    assert plain["loss"] == pytest.approx(0.15 * plain["tempo"])
    p = cli("score", "--weights", "volume=1", input=line)
    assert p.returncode == 2 and "volume" in p.stderr and "Traceback" not in p.stderr


def test_no_note_metrics(cli):
    p = cli("score", "--no-note-metrics", input=json.dumps({"ref": REF, "pred": WRONG_NOTES}))
    rec = records(p.stdout)[0]
    assert rec["note_f1"] is None and rec["note_f1_offset"] is None and rec["pitch"] > 0


def test_summary_table_on_stderr_and_json_record(cli, folders):
    ref, pred = folders
    p = cli("score", "--ref", ref, "--pred", pred, "--summary")
    assert p.returncode == 0
    assert len(records(p.stdout)) == 3  # the table is not on stdout
    row = next(line for line in p.stderr.splitlines() if line.startswith("reward"))
    n, mean, median = row.split()[1:4]
    rewards = [r["reward"] for r in records(p.stdout)]
    assert int(n) == 3 and float(mean) == pytest.approx(sum(rewards) / 3, abs=1e-4)
    assert float(median) == pytest.approx(sorted(rewards)[1], abs=1e-4)

    p = cli("score", "--ref", ref, "--pred", pred, "--summary-json")
    *recs, last = records(p.stdout)
    assert len(recs) == 3 and last["pairs"] == 3 and last["failed"] == 0
    st = last["summary"]["reward"]
    assert st["mean"] == pytest.approx(sum(rewards) / 3)
    assert st["ci95"][0] <= st["mean"] <= st["ci95"][1]
    assert all(not math.isnan(v["mean"]) for v in last["summary"].values())


@pytest.mark.parametrize("args,message", [
    (["--ref", "nowhere.abc", "--pred", "nowhere.abc"], "no such file"),
    (["--ref", "REF"], "both --ref and --pred"),
    (["--ref", "REF", "--pred", "DIR"], "both be files or both be folders"),
])
def test_usage_errors_are_one_line(cli, tmp_path, args, message):
    (tmp_path / "r.abc").write_text(REF)
    args = [str(tmp_path / "r.abc") if a == "REF" else str(tmp_path) if a == "DIR" else a
            for a in args]
    p = cli("score", *args)
    assert p.returncode == 2
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_command_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, abcscribe.cmds.score; "
            "print(sorted(m for m in ('numpy', 'scipy', 'music21', 'librosa', 'torch', 'Levenshtein') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_summary_counts_records_that_carry_a_null_error_from_upstream(cli):
    # `transcribe` records say "error": null when all went well; they are scored pairs
    lines = [{"id": f"c{i}", "ref": REF, "pred": REF, "error": None, "windows": 1} for i in range(3)]
    p = cli("score", "--summary-json", input="\n".join(json.dumps(x) for x in lines) + "\n")
    assert p.returncode == 0, p.stderr
    *recs, summary = records(p.stdout)
    assert len(recs) == 3 and summary["pairs"] == 3
    assert summary["summary"]["reward"]["mean"] == 1.0
