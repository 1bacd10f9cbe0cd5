"""`abcscribe sft` as a user runs it: Q&A JSONL in, a model directory out that loads and
transcribes; bad records reported and skipped; the loss curve in DIR/log.jsonl."""

import json

import pytest
from conftest import write_jsonl
from test_models import GREEDY, make_records

from abcscribe.core.models import load_model
from abcscribe.core.train.sft import SFTOptions, run_sft


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    records = make_records(folder)
    missing = dict(records[0], id="missing-audio", audio=str(folder / "nowhere.wav"))
    empty = dict(records[1], id="empty-answer")
    empty["messages"] = [records[1]["messages"][0], {"role": "assistant", "content": " "}]
    train = write_jsonl(folder / "train.jsonl", [missing, *records, empty])
    return folder, train, records


@pytest.mark.slow
def test_sft_tiny_trains_logs_and_saves_a_model_that_transcribes(cli, data, tmp_path):
    folder, train, records = data
    out = tmp_path / "sft"
    p = cli("sft", "--data", train, "--model", "tiny", "-o", out, "--max-steps", "90",
            "--batch-size", "5", "--lr", "1e-3", "--logging-steps", "10",
            "--eval-data", write_jsonl(folder / "val.jsonl", records[:2]), "--eval-steps", "45")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "missing-audio" in p.stderr and "empty-answer" in p.stderr
    summary = json.loads(p.stdout)
    assert summary["train_records"] == len(records) and summary["steps"] == 90

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    evals = [r["eval_loss"] for r in log if "eval_loss" in r]
    assert losses[-1] <= losses[0] / 2
    assert len(evals) >= 2 and evals[-1] < evals[0]

    lm = load_model(str(out))
    assert lm.family == "composed"
    out_abc = [o[0] for o in lm.generate(records, GREEDY)]
    assert sum(a == r["abc"].strip() for a, r in zip(out_abc, records)) >= 2

    # a finished output is kept as it is (make-style re-runs), unless told to overwrite
    warnings = []
    again = run_sft(train, out, SFTOptions(max_steps=90), warn=warnings.append)
    assert again["skipped"] and again["steps"] == 90 and "skipping" in warnings[-1]


@pytest.mark.slow
def test_sft_resumes_from_its_last_checkpoint(data, tmp_path):
    _, train, _ = data
    out = tmp_path / "sft"
    opts = dict(batch_size=5, save_steps=2, logging_steps=1)
    run_sft(train, out, SFTOptions(max_steps=4, **opts), warn=lambda m: None)
    assert (out / "checkpoint-4").is_dir()
    (out / "abcscribe.json").unlink()  # as if it had been interrupted before the end
    resumed = run_sft(train, out, SFTOptions(max_steps=6, resume=True, **opts), warn=lambda m: None)
    assert resumed["steps"] == 6
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps[:4] == [1, 2, 3, 4] and max(steps) == 6 and 1 not in steps[4:]
    assert load_model(str(out)).family == "composed"


def test_sft_untrained_model_with_zero_steps(data, tmp_path):
    _, train, records = data
    summary = run_sft(train, tmp_path / "untrained", SFTOptions(max_steps=0), warn=lambda m: None)
    assert summary["steps"] == 0
    lm = load_model(str(tmp_path / "untrained"))
    assert len(lm.generate(records[:1], GREEDY)[0]) == 1


@pytest.mark.slow
def test_sft_lora_on_an_audio_llm(data, tmp_path):
    from abcscribe.core.models.hf_audio import build_random_qwen2_audio

    _, train, records = data
    base = build_random_qwen2_audio(tmp_path / "qwen2-audio", [r["abc"] for r in records])
    out = tmp_path / "sft"
    summary = run_sft(train, out, SFTOptions(model=str(base), max_steps=3, batch_size=2), warn=lambda m: None)
    assert summary["lora"] is True and summary["steps"] == 3
    assert (out / "adapter_model.safetensors").exists()
    meta = json.loads((out / "abcscribe.json").read_text())
    assert meta["family"] == "hf-audio" and meta["lora"] is True
    assert len(load_model(str(out)).generate(records[:1], GREEDY)[0]) == 1


def test_sft_rejects_unusable_input_in_one_line(cli, data, tmp_path):
    folder, _, records = data
    p = cli("sft", "--data", tmp_path / "none.jsonl", "-o", tmp_path / "out")
    assert p.returncode == 2 and "none.jsonl" in p.stderr and "Traceback" not in p.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(records[0], audio=str(folder / "gone.wav"))])
    p = cli("sft", "--data", bad, "-o", tmp_path / "out")
    assert p.returncode == 2 and "no usable training records" in p.stderr
    assert "Traceback" not in p.stderr


def test_features_handed_over_by_another_process_are_used_as_they_are(data, tmp_path):
    """Under a launcher each clip is encoded by one process and its features handed to the
    others (sft's prepare): features adopted for a record are what the model reads, and its
    audio is not read again."""
    import numpy as np

    from abcscribe.core.errors import UserError
    from abcscribe.core.models import build_model

    folder, _, records = data
    lm = build_model("tiny", records)
    gone = dict(records[0], audio=str(folder / "moved-away.wav"))
    with pytest.raises(UserError, match="no such audio file"):
        lm.collate([gone])
    feats = lm.features.get(records[0])
    assert lm.features.cached([lm.features.key(records[0])]).keys() == {lm.features.key(records[0])}
    lm.features.adopt({lm.features.key(gone): feats + 1.0})
    batch = lm.collate([gone])
    assert np.allclose(batch["audio_features"][0, : len(feats)].numpy(), feats + 1.0)
