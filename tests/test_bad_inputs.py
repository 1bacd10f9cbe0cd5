"""Every command against one catalogue of bad inputs (tests/bad_inputs.py): no traceback, no
hang, the right exit status, nothing lost. Plus the cases a command line cannot stage: a
--jobs worker killed mid-batch, render killed while fluidsynth runs, a kill during a
checkpoint save, and an interrupted ppo run resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abcscribe.core.errors import UserError
from bad_inputs import cases, make_inputs, report, run_case
from conftest import need_tool

CASES = cases()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once, one after the other: two commands compiling librosa's numba
    functions at once can write mismatched halves of numba's shared on-disk cache (numba issue
    10128), and every later process that loads them segfaults."""
    base = tmp_path_factory.mktemp("bad")
    root = make_inputs(base / "in")
    return {c.name: run_case(c, root, base / f"case{i}") for i, c in enumerate(CASES)}


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_bad_input_is_a_clear_error_and_loses_nothing(outcomes, name):
    o = outcomes[name]
    assert o.ok, report([o]) + "\n" + o.stderr[-3000:]


# ---- a --jobs worker dies --------------------------------------------------------------------
def _convert_or_die(task):
    if task == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    return task.upper(), None


def test_a_killed_midi2abc_worker_ends_the_batch_with_an_error():
    from abcscribe.core.midi2abc import convert_all as _results

    got = []
    with pytest.raises(UserError, match="worker died"):
        for abc, _ in _results(["a", "b", "die", "c"], 2, convert=_convert_or_die):
            got.append(abc)
    assert got == ["A", "B"]  # what came before the dead worker's input, in order


# ---- render killed while fluidsynth renders --------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_killing_render_kills_fluidsynth_and_leaves_no_temporary_files(tmp_path, how):
    need_tool("fluidsynth")
    need_tool("setpriv")
    abc = tmp_path / "long.abc"  # 40 minutes of whole notes: fluidsynth runs for a while
    abc.write_text("X:1\nT:long\nM:4/4\nL:1/4\nQ:1/4=60\nK:C\n" + "C4|" * 600 + "\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "abcscribe", "render", abc, "-o", tmp_path / "out",
                             "--engine", "fluidsynth"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    synth = []
    for _ in range(600):  # until fluidsynth runs (up to a minute on a busy machine)
        synth = _children(proc.pid)
        if synth and any(tmp.iterdir()):
            break
        time.sleep(0.1)
    assert synth, "fluidsynth never started"
    proc.send_signal(how)
    proc.wait(timeout=60)
    for _ in range(100):  # the parent-death signal is delivered asynchronously
        if not any(Path(f"/proc/{pid}").exists() for pid in synth):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in synth), "fluidsynth still running"
    if how == signal.SIGTERM:  # an orderly exit also removes the temporary folder
        assert proc.returncode == 128 + signal.SIGTERM
        assert list(tmp.iterdir()) == []
        assert b"Traceback" not in proc.stderr.read()
    assert not (tmp_path / "out" / "long.wav").exists()


# ---- checkpoints -----------------------------------------------------------------------------
def test_a_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_whole(tmp_path):
    from abcscribe.core.modeldir import save_atomically

    ck = tmp_path / "checkpoint-2"
    save_atomically(ck, lambda d: (d.mkdir(), (d / "state.json").write_text('{"step": 2}')))

    def torn(d):
        d.mkdir()
        (d / "optimizer.pt").write_bytes(b"partial")
        raise KeyboardInterrupt  # the kill arrives mid-save

    with pytest.raises(KeyboardInterrupt):
        save_atomically(ck, torn)
    assert json.loads((ck / "state.json").read_text()) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_resume_passes_over_a_torn_checkpoint_to_the_newest_complete_one(tmp_path):
    from abcscribe.core.modeldir import plan_run

    out = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):
        ck = out / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "optimizer.pt").write_bytes(b"x" * 10)
        if complete:
            (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (out / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                                           for s in range(1, 7)) + '{"step": 7, "lo')
    warnings = []
    plan = plan_run(out, "sft", resume=True, overwrite=False, state_file="trainer_state.json",
                    warn=warnings.append, log_file="log.jsonl")
    assert plan.action == "resume" and plan.checkpoint == out / "checkpoint-4"
    assert any("checkpoint-6" in w and "incomplete" in w for w in warnings)
    # the rows the resumed run writes again are gone, and the torn last line with them
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


# ---- ppo resumed is the run uninterrupted ---------------------------------------------------
@pytest.fixture(scope="module")
def ppo_setup(tmp_path_factory):
    from bad_inputs import _model, _record, _wav

    root = tmp_path_factory.mktemp("ppo-resume")
    _wav(root / "a.wav")
    _wav(root / "b.wav", seconds=0.8)
    _model(root)
    records = [_record(root / "a.wav"), _record(root / "b.wav", id="b", abc=_record(root / "a.wav")["abc"].replace("CDEF", "GABc"))]
    return root, records


def _ppo(root, records, out, max_steps, resume_from=None):
    from abcscribe.core.models import load_model
    from abcscribe.core.train import ppo

    cfg = ppo.PPOConfig(batch_size=1, samples_per_prompt=2, max_new_tokens=6, max_steps=max_steps,
                        save_steps=2, ppo_epochs=1, mini_batch_size=2, lr=1e-2, seed=3)
    lm = load_model(str(resume_from or root / "model"), train=True)
    ppo.train(lm, records, out, cfg, resume_from=resume_from, warn=lambda m: None)
    return lm


def _rows(out):
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]


def test_a_resumed_ppo_run_is_the_uninterrupted_run(ppo_setup, tmp_path):
    import torch

    from abcscribe.core.modeldir import plan_run
    from abcscribe.core.train import ppo

    root, records = ppo_setup
    whole = _ppo(root, records, tmp_path / "whole", 4)

    # the same run killed after logging step 3 (checkpoint-2 is its newest save)
    cut = tmp_path / "cut"
    _ppo(root, records, cut, 3)
    for name in os.listdir(cut):
        if name not in ("checkpoint-2", "log.jsonl"):
            p = cut / name
            p.unlink() if p.is_file() else None
    plan = plan_run(cut, "ppo", resume=True, overwrite=False, state_file=ppo.STATE_NAME,
                    warn=lambda m: None, log_file=ppo.LOG_NAME)
    assert plan.checkpoint == cut / "checkpoint-2"
    resumed = _ppo(root, records, cut, 4, resume_from=plan.checkpoint)

    assert _rows(cut) == _rows(tmp_path / "whole")  # same rows, none repeated
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
