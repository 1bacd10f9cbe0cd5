"""The model card (README.md) of a model folder: what it is built from, what it was trained on
and for how long, and the held-out figures of the runs that made it, from ``abcscribe.json``."""

from __future__ import annotations

from typing import Any


def model_card(meta: dict[str, Any], parts: dict[str, Any]) -> str:
    """Markdown with the Hub's YAML header. ``meta`` is the folder's ``abcscribe.json``;
    ``parts`` names the pieces (language model, encoder, projector, parameters)."""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [abcscribe, music-transcription, abc-notation, audio-text-to-text]",
        "---",
        "",
        f"# {meta.get('preset') or 'abcscribe'} {meta.get('family', 'composed')} audio LM (abcscribe)",
        "",
        "Transcribes recordings to ABC notation. Made by `abcscribe`; the figures below come from",
        "`abcscribe.json` in this folder.",
        "",
        "## Base parts",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in parts.items() if value not in (None, "")]
    lines += ["", "## Training", ""]
    for kind in ("pretrain", "sft", "ppo"):
        run = meta.get(kind)
        if isinstance(run, dict):
            lines.append(f"- {kind}: {_run_line(kind, run)}")
    if not any(isinstance(meta.get(k), dict) for k in ("pretrain", "sft", "ppo")):
        lines.append("- not trained yet (built, not fine-tuned)")
    figures = _held_out(meta)
    lines += ["", "## Held-out figures", ""]
    lines += figures or ["- none recorded by the run that made this folder (no held-out data given)"]
    lines += [
        "",
        "## Use",
        "",
        "```sh",
        "abcscribe transcribe --model THIS_FOLDER recording.wav",
        "```",
        "",
        "```python",
    ]
    if meta.get("family", "composed") == "composed":
        lines += [
            "from transformers import AutoModel",
            "model = AutoModel.from_pretrained(THIS_FOLDER, trust_remote_code=True)  # or: import abcscribe first",
            "```",
            "",
            "The audio features (`audio encoder` above) come from abcscribe's feature extractors;",
            "`generate` takes `audio_features`, `audio_mask` and `audio_positions` as abcscribe",
            "collates them.",
        ]
    else:
        lines += [
            "from transformers import AutoModelForMultimodalLM, AutoProcessor",
            "processor = AutoProcessor.from_pretrained(THIS_FOLDER)",
            "model = AutoModelForMultimodalLM.from_pretrained(THIS_FOLDER)",
            "```",
        ]
    return "\n".join(lines + [""])


def _run_line(kind: str, run: dict[str, Any]) -> str:
    bits = [f"{run.get('steps', '?')} steps"]
    if run.get("data"):
        bits.append(f"data {run['data']}")
    n = run.get("train_records")
    if n:
        bits.append(f"{n} records")
    opts = run.get("options") or run.get("config") or {}
    for key in ("batch_size", "lr", "samples_per_prompt", "advantage"):
        if opts.get(key) is not None:
            bits.append(f"{key} {opts[key]}")
    if run.get("processes"):
        bits.append(f"{run['processes']} processes")
    return ", ".join(bits)


def _held_out(meta: dict[str, Any]) -> list[str]:
    out = []
    sft = meta.get("sft") or {}
    if sft.get("eval_loss") is not None:
        out.append(f"- sft: held-out loss {sft['eval_loss']:.4f} on {sft.get('eval_records', '?')} records")
    for when, fig in ((meta.get("ppo") or {}).get("eval") or {}).items():
        out.append(f"- ppo {when.replace('eval_', '')}: mean reward {fig['reward_mean']:.4f} "
                   f"on {fig.get('n', '?')} held-out clips (greedy)")
    return out
