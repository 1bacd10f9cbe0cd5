"""What a model needs from a Q&A record: its prompt messages, its answer, its audio clip or its
precomputed embeddings. Shared by every model family."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from abcscribe.core.errors import UserError


def answer_of(record: dict[str, Any]) -> str:
    """The assistant's answer (the last assistant turn), or '' when there is none."""
    for msg in reversed(record.get("messages") or []):
        if msg.get("role") == "assistant":
            content = msg.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}]
                content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
            return str(content or "")
    return ""


def prompt_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation up to (not including) the final assistant answer. A record without
    messages gets the default transcription question."""
    msgs = record.get("messages")
    if not msgs:
        msgs = [
            {
                "role": "user",
                "content": [{"type": "audio"}, {"type": "text", "text": DEFAULT_QUESTION}],
            }
        ]
    msgs = copy.deepcopy(list(msgs))
    while msgs and msgs[-1].get("role") == "assistant":
        msgs.pop()
    return msgs


DEFAULT_QUESTION = "Transcribe this audio to ABC notation."


def check_record(record: dict[str, Any], need_answer: bool = True) -> None:
    """Raise UserError naming the record when it cannot be used (no audio nor embedding on disk,
    empty answer). ``sft`` reports and skips such records."""
    rid = record.get("id", "record")
    emb = record.get("embedding")
    audio = record.get("audio")
    if emb and Path(emb).is_file():
        pass
    elif audio and Path(audio).is_file():
        pass
    elif emb or audio:
        raise UserError(f"{rid}: audio file not found: {audio or emb}")
    else:
        raise UserError(f"{rid}: record has no 'audio' (nor 'embedding')")
    if need_answer and not answer_of(record).strip():
        raise UserError(f"{rid}: empty answer")


def resolve_paths(record: dict[str, Any], base: str | Path | None) -> dict[str, Any]:
    """Make the record's relative ``audio``/``embedding`` paths point next to ``base`` (the
    JSONL's folder) when they do not exist as given."""
    if base is None:
        return record
    for key in ("audio", "embedding"):
        v = record.get(key)
        if isinstance(v, str) and v and not Path(v).is_absolute() and not Path(v).exists():
            alt = Path(base) / v
            if alt.exists():
                record[key] = str(alt)
    return record


def load_clip(record: dict[str, Any], sr: int, max_seconds: float | None = None) -> np.ndarray:
    """The record's audio (``offset``/``duration`` seconds of ``audio``) as float32 mono at ``sr``,
    at most ``max_seconds`` long."""
    path = record.get("audio")
    if not path:
        raise UserError(f"{record.get('id', 'record')}: record has no 'audio'")
    offset = float(record.get("offset") or 0.0)
    dur = record.get("duration")
    dur = float(dur) if dur is not None else None
    if max_seconds is not None:
        dur = min(dur, max_seconds) if dur is not None else max_seconds
    from abcscribe.core.audio import load_audio

    audio, _ = load_audio(path, sr=sr, offset=offset, duration=dur)
    return np.asarray(audio, dtype=np.float32)


def load_embedding(record: dict[str, Any], max_seconds: float | None = None) -> tuple[np.ndarray, dict]:
    """The record's precomputed embeddings (tensor ``embeddings`` [frames, dim] of the
    ``.safetensors`` that ``embed`` wrote) and their metadata. When the file covers more than the
    record's clip (its metadata offset/duration say so), the clip's frames are cut out."""
    from safetensors import safe_open

    path = record["embedding"]
    try:
        with safe_open(str(path), framework="np") as f:
            emb = f.get_tensor("embeddings")
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise UserError(f"{path}: cannot read embeddings ({e})") from None
    emb = np.asarray(emb, dtype=np.float32)
    fr = float(meta.get("frame_rate") or 0) or None
    if fr:
        f_off = float(meta.get("offset") or 0.0)
        r_off = float(record.get("offset") or 0.0)
        start = max(0, int(round((r_off - f_off) * fr)))
        dur = record.get("duration")
        f_dur = meta.get("duration")
        end = None
        if dur is not None and (start > 0 or (f_dur is not None and float(f_dur) > float(dur) + 0.5)):
            end = start + int(round(float(dur) * fr))
        if start > 0 or end is not None:
            emb = emb[start:end]
        if max_seconds is not None:
            emb = emb[: int(round(max_seconds * fr))]
    return emb, meta
