"""examples/sets.py makes the demo's record sets (evaluation sets, ppo's prompts) from mkqa
output: the records it keeps, how often, and their file paths as seen from the new file."""

import importlib.util
import json

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def sets():
    spec = importlib.util.spec_from_file_location("demo_sets", ROOT / "examples" / "sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, pieces):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"{p}:000", "piece": p, "audio": f"../data/{p}.wav"}) + "\n"
                            for p in pieces))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_repeat_weights_the_prompts_towards_some_pieces(sets, tmp_path):
    _write(tmp_path / "qa" / "val.jsonl", ["tune-1", "bach-a", "tune-2"])
    _write(tmp_path / "qa-sf" / "val.jsonl", ["bach-b", "tune-3"])
    out = tmp_path / "sets" / "ppo.jsonl"
    assert sets.main([str(out), str(tmp_path / "qa" / "val.jsonl"), str(tmp_path / "qa-sf" / "val.jsonl"),
                      "--repeat", "bach-=3"]) == 0
    recs = _read(out)
    assert [r["piece"] for r in recs] == ["tune-1"] + ["bach-a"] * 3 + ["tune-2"] + ["bach-b"] * 3 + ["tune-3"]
    # every copy's audio still names the same file, seen from the new folder
    for r in recs:
        assert (out.parent / r["audio"]).resolve() == (tmp_path / "data" / f"{r['piece']}.wav").resolve()
    # filters first, then copies: --limit counts records kept, not copies written
    assert sets.main([str(out), str(tmp_path / "qa" / "val.jsonl"), "--limit", "2", "--repeat", "bach-=2"]) == 0
    assert [r["piece"] for r in _read(out)] == ["tune-1", "bach-a", "bach-a"]


@pytest.mark.parametrize("bad", ["bach-", "bach-=0", "=3", "bach-=x"])
def test_a_malformed_repeat_is_a_one_line_usage_error(sets, tmp_path, bad, capsys):
    _write(tmp_path / "val.jsonl", ["bach-a"])
    with pytest.raises(SystemExit) as e:
        sets.main([str(tmp_path / "out.jsonl"), str(tmp_path / "val.jsonl"), "--repeat", bad])
    assert e.value.code == 2 and "--repeat wants PREFIX=N" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_metres_like_draws_the_prompts_in_the_metres_of_the_music(sets, tmp_path):
    # val: few pieces, too many in 4/4; train: the music's proportions (2 of 3/4 to 1 of 4/4)
    def write(path, metres):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"id": f"t{i}:000", "piece": f"tune-{i}", "audio": f"../data/t{i}.wav",
                                            "abc": f"X:1\nM:{m}\nL:1/16\nK:G\nGABc|\n", "meta": {"metre": m}}) + "\n"
                                for i, m in enumerate(metres)))

    write(tmp_path / "qa" / "val.jsonl", ["4/4"] * 6 + ["3/4"] * 2 + ["9/8"])
    write(tmp_path / "qa" / "train.jsonl", ["3/4"] * 20 + ["4/4"] * 10 + ["6/8"] * 7)
    out = tmp_path / "sets" / "ppo.jsonl"
    assert sets.main([str(out), str(tmp_path / "qa" / "val.jsonl"),
                      "--metres-like", str(tmp_path / "qa" / "train.jsonl")]) == 0
    recs = _read(out)
    metres = [sets.metre(r) for r in recs]
    # as many records as kept; 3/4 twice as often as 4/4 (6/8: none to draw; 9/8: not in train)
    assert len(recs) == 9 and metres.count("3/4") == 6 and metres.count("4/4") == 3
    # each 3/4 record used thrice, the 4/4 ones drawn without repeats, paths still valid
    assert sorted(r["piece"] for r in recs if sets.metre(r) == "3/4") == ["tune-6"] * 3 + ["tune-7"] * 3
    assert len({r["piece"] for r in recs if sets.metre(r) == "4/4"}) == 3
    for r in recs:
        assert (out.parent / r["audio"]).resolve() == (tmp_path / "data" / f"{r['id'].split(':')[0]}.wav").resolve()
    # the same draw every time
    first = out.read_text()
    assert sets.main([str(out), str(tmp_path / "qa" / "val.jsonl"),
                      "--metres-like", str(tmp_path / "qa" / "train.jsonl")]) == 0
    assert out.read_text() == first


def test_a_missing_metres_file_is_a_one_line_usage_error(sets, tmp_path, capsys):
    _write(tmp_path / "val.jsonl", ["tune-1"])
    with pytest.raises(SystemExit) as e:
        sets.main([str(tmp_path / "out.jsonl"), str(tmp_path / "val.jsonl"), "--metres-like", str(tmp_path / "nope.jsonl")])
    assert e.value.code == 2 and "--metres-like" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
