"""A model folder as the Hugging Face ecosystem expects it: `AutoModel` loads it (with the
modeling file it carries, or after `import abcscribe`), `.generate` runs, and it carries a
generation_config.json and a model card."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny composed model built for four toy clips, saved as `sft` saves it."""
    from abcscribe.core.models import build_tiny
    from test_ppo import TINY, toy_records

    root = tmp_path_factory.mktemp("hf-folder")
    records = toy_records(root, 4, 1, "train")
    lm = build_tiny(records, **TINY)
    lm.save(root / "model", extra={"sft": {"steps": 7, "data": "toy.jsonl", "train_records": 4,
                                           "eval_loss": 1.25, "eval_records": 2}})
    return root / "model", records


def test_folder_carries_auto_map_modeling_file_generation_config_and_card(folder):
    path, _ = folder
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "abcscribe_composed"
    assert cfg["auto_map"]["AutoModel"] == "modeling_abcscribe.ComposedModel"
    assert cfg["auto_map"]["AutoConfig"] == "modeling_abcscribe.ComposedConfig"
    assert (path / "modeling_abcscribe.py").is_file()
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] is not None and gen["pad_token_id"] is not None
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    assert "- sft: 7 steps, data toy.jsonl" in card
    assert "held-out loss 1.2500 on 2 records" in card
    assert "cqt" in card and "qwen2" in card


def test_plain_automodel_after_import_abcscribe_generates_as_transcribe_does(folder):
    from transformers import AutoModel, AutoModelForCausalLM

    import abcscribe  # noqa: F401  (registers the classes with transformers)
    from abcscribe.core.models import load_model
    from abcscribe.core.models.base import GenerationOptions

    path, records = folder
    model = AutoModel.from_pretrained(str(path))
    assert type(model).__name__ == "ComposedModel"
    assert type(AutoModelForCausalLM.from_pretrained(str(path))).__name__ == "ComposedModel"

    # the same audio prompt, through transformers' generate and through abcscribe's
    lm = load_model(str(path))
    prompt = lm.collate(records[:2], answers=False)
    ours = lm.generate_ids(prompt, GenerationOptions(temperature=0.0, max_new_tokens=6))
    theirs = model.generate(**prompt, max_new_tokens=6, do_sample=False,
                            suppress_tokens=lm.suppress_ids or None)
    n = prompt["input_ids"].shape[1]
    assert theirs.shape[1] > n
    k = min(ours.shape[1], theirs.shape[1] - n)
    assert torch.equal(theirs[:, n:n + k], ours[:, :k].to(theirs.dtype))


def test_trust_remote_code_loads_the_folder_with_its_own_modeling_file(folder, tmp_path):
    path, _ = folder
    code = (
        "import sys, json\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        f"m = AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True)\n"
        f"tok = AutoTokenizer.from_pretrained({str(path)!r}, trust_remote_code=True)\n"
        "ids = tok('X:1', return_tensors='pt')\n"
        "out = m.generate(**ids, max_new_tokens=4, do_sample=False)\n"
        "print(json.dumps({'module': type(m).__module__, 'abcscribe': 'abcscribe' in sys.modules,"
        " 'new': out.shape[1] - ids['input_ids'].shape[1]}))\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["module"].startswith("transformers_modules.")  # the folder's copy, not abcscribe's
    assert got["abcscribe"] is False
    assert 1 <= got["new"] <= 4


def test_a_ppo_run_folder_keeps_its_training_state_without_pickles(tmp_path):
    """The resume state is JSON and safetensors, read back as it was written."""
    from abcscribe.core.train import ppo

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW(params, lr=0.1)
    sum(p.sum() for p in params).backward()
    opt.step()
    tensors, rest = ppo._split_optimizer(opt.state_dict())
    json.dumps(rest)  # nothing a pickle would be needed for
    back = ppo._join_optimizer(tensors, json.loads(json.dumps(rest)))
    fresh = torch.optim.AdamW(params, lr=0.1)
    fresh.load_state_dict(back)
    for pid, entries in opt.state_dict()["state"].items():
        for name, v in entries.items():
            assert torch.equal(torch.as_tensor(fresh.state_dict()["state"][pid][name]), torch.as_tensor(v))
