"""The model commands under a launcher, as a user runs them on one machine with several
processes: `torchrun --nproc-per-node 2 -m abcscribe ...` on CPU (gloo). Each input is handled
by one process and its record written once, in input order, by the main process."""

import json
import os
import signal
import subprocess
import sys

import pytest

from abcscribe.core.audio import write_audio
from abcscribe.core.distributed import Ranks
from conftest import ROOT, write_jsonl


def torchrun(*args, nproc=2, cwd=None):
    """``abcscribe ARGS`` under torchrun with ``nproc`` CPU processes (a fresh port each time)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "abcscribe", *map(str, args)]
    # its own process group: a run that outlives the timeout is ended with all its workers
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=cwd, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"torchrun {' '.join(map(str, args))} ran past 900 s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def records_of(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def beeps(folder, n, seconds=0.5, sr=16000):
    """``n`` short tones of different pitches as wav files; their paths in sorted order."""
    import numpy as np

    paths = []
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        path = folder / f"clip{i:02d}.wav"
        write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * 2 ** (i / 12) * t)).astype("float32"), sr)
        paths.append(path)
    return paths


# ---- the split itself ---------------------------------------------------------------------------
def test_ranks_split_inputs_round_robin_and_keep_inputs_of_one_key_together():
    items = list("abcdefg")
    shares = [Ranks(r, 3).take(items) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    keys = ["x", "x", "y", "z", "y", "x", "w"]  # x -> 0, y -> 1, z -> 0, w -> 1
    shares = [Ranks(r, 2).take(keys, keys=keys) for r in range(2)]
    assert shares == [[0, 1, 3, 5], [2, 4, 6]]
    assert Ranks().take(items) == list(range(7))


def test_ranks_come_from_the_launchers_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    r = Ranks.from_env()
    assert (r.rank, r.size, r.local_rank, r.is_main) == (2, 4, 0, False)
    assert r.device("cuda") == "cuda:0" and r.device("cpu") == "cpu"
    monkeypatch.setenv("RANK", "7")  # inconsistent: one process
    assert Ranks.from_env() == Ranks()


# ---- transcribe and embed under torchrun ------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return folder, beeps(folder, 5)


def test_transcribe_under_torchrun_writes_every_input_once_in_input_order(clips, tmp_path):
    folder, paths = clips
    recs = records_of(torchrun("transcribe", folder, "-o", tmp_path / "abc", "--model", "baseline"))
    assert [r["path"] for r in recs] == [str(p) for p in paths]  # each once, in order
    assert all(r["error"] is None and r["abc"] for r in recs)
    assert sorted(p.name for p in (tmp_path / "abc").glob("*.abc")) == [p.stem + ".abc" for p in paths]
    # resumable, and --shard (job arrays across machines) splits before the processes do
    again = records_of(torchrun("transcribe", folder, "-o", tmp_path / "abc", "--model", "baseline",
                                "--shard", "1/2"))
    assert [r["path"] for r in again] == [str(p) for p in paths[1::2]]
    assert all(r.get("skipped") for r in again)
    assert [r["abc"] for r in again] == [r["abc"] for r in recs[1::2]]


def test_embed_under_torchrun_writes_every_record_once_and_one_file_per_clip(clips, tmp_path):
    folder, paths = clips
    # Q&A records: two records of each clip share one embedding file
    recs = [{"id": f"{p.stem}-{q}", "audio": str(p)} for p in paths for q in ("a", "b")]
    data = write_jsonl(tmp_path / "qa.jsonl", recs)
    out = records_of(torchrun("embed", data, "-o", tmp_path / "emb"))
    assert [r["id"] for r in out] == [r["id"] for r in recs]
    files = sorted((tmp_path / "emb").glob("*.safetensors"))
    assert len(files) == len(paths)
    assert {r["embedding"] for r in out} == {str(f) for f in files}


def test_embed_under_torchrun_fails_the_run_once_for_a_bad_input_of_any_process(clips, tmp_path):
    folder, paths = clips
    bad = tmp_path / "audio"
    bad.mkdir()
    for p in paths:
        (bad / p.name).symlink_to(p)
    (bad / "zz-broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    proc = torchrun("embed", bad, "-o", tmp_path / "emb")
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert [r["audio"] for r in recs] == [str(bad / p.name) for p in paths] + [str(bad / "zz-broken.wav")]
    assert [bool(r.get("error")) for r in recs] == [False] * len(paths) + [True]
    assert all(r["frames"] > 0 for r in recs[:-1])
    assert proc.stderr.count("1 of 6 inputs failed") == 1


# ---- ppo under torchrun ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sft(tmp_path_factory):
    """Eight toy clips (as mkqa + embed write them) and a tiny model after a few sft steps."""
    from abcscribe.core.train.sft import SFTOptions, run_sft
    from test_ppo import TINY, toy_records

    folder = tmp_path_factory.mktemp("ppo-2proc")
    data = write_jsonl(folder / "train.jsonl", toy_records(folder, 8, 1, "train"))
    run_sft(data, folder / "sft", SFTOptions(max_steps=2, batch_size=4, tiny=TINY, logging_steps=1),
            warn=lambda m: None)
    return data, folder / "sft"


def ppo_rows(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_ppo_under_torchrun_draws_distinct_prompts_logs_once_and_resumes(tiny_sft, tmp_path):
    data, sft = tiny_sft
    out = tmp_path / "ppo"
    args = ("ppo", "--data", data, "--model", sft, "-o", out, "--batch-size", "2",
            "--samples-per-prompt", "2", "--max-new-tokens", "12", "--save-steps", "1", "--seed", "3")
    recs = records_of(torchrun(*args, "--max-steps", "2"))
    assert len(recs) == 1 and recs[0]["steps"] == 2  # one summary, from the main process
    rows = ppo_rows(out)
    assert [r["step"] for r in rows] == [1, 2]  # one row per step
    seen = []
    for row in rows:
        procs = row["processes"]
        assert len(procs) == 2 and all(len(p["prompts"]) == 2 for p in procs)
        assert not set(procs[0]["prompts"]) & set(procs[1]["prompts"])  # each its own prompts
        seen += procs[0]["prompts"] + procs[1]["prompts"]
        assert row["reward_mean"] == pytest.approx(sum(p["reward_mean"] for p in procs) / 2)
        for p in procs:  # where each process's step went: the phases add up to the step
            assert set(p["phases"]) == {"generate", "reward", "experience", "update"}
            assert all(v >= 0 for v in p["phases"].values())
            assert sum(p["phases"].values()) <= row["seconds"] + 0.01
    assert len(seen) == len(set(seen)) == 8  # two steps of 2 x 2 prompts: the whole epoch once
    assert json.loads((out / "abcscribe.json").read_text())["ppo"]["steps"] == 2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (out / "ppo_state.json").is_file() and not list(out.rglob("*.pt"))  # no pickles
    assert "- ppo: 2 steps" in (out / "README.md").read_text() and "2 processes" in (out / "README.md").read_text()

    # resume with the same number of processes: the rows go on from step 2, not again from 1
    recs = records_of(torchrun(*args, "--max-steps", "3", "--resume"))
    assert recs[0]["steps"] == 3
    rows = ppo_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert len({p for p in rows[2]["processes"][0]["prompts"] + rows[2]["processes"][1]["prompts"]}) == 4


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sft_under_accelerate_launch_on_cpu_runs_two_processes(tiny_sft, tmp_path):
    """The README's CPU line: `accelerate launch --multi_gpu --num_processes 2` on a machine
    without CUDA starts two gloo processes (`--cpu` would start one). The processes split the
    records to prepare and hand each other the features: a record that cannot be read is
    skipped by both and reported once; both train on the same rest."""
    data, _ = tiny_sft
    records = [json.loads(line) for line in open(data)]
    lost = dict(records[0], id="lost-embedding", embedding=str(tmp_path / "nowhere.safetensors"))
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [records[0], lost, *records[1:]])
    out = tmp_path / "sft"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), "-m", "abcscribe", "sft", "--data", mixed,
         "--model", "tiny", "-o", out, "--max-steps", "2", "--batch-size", "2", "--eval-data", data],
        capture_output=True, text=True, env=env, timeout=900)
    recs = records_of(proc)
    assert len(recs) == 1 and recs[0]["steps"] == 2  # one summary
    assert recs[0]["train_records"] == 8 and recs[0]["eval_records"] == 8
    assert proc.stderr.count("skipping lost-embedding") == 1, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # 8 records, 2 per process: two processes see half the epoch per step, one would see a quarter
    assert rows[0]["step"] == 1 and rows[0]["epoch"] == pytest.approx(0.5)
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
