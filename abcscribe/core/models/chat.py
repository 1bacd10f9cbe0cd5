"""Prompts and answers as token ids: the chat template renders the conversation, the audio goes
where the template puts it, and the answer is what the template writes for the assistant turn
(with its end-of-turn token), so training and generation agree on where an answer stops."""

from __future__ import annotations

import json
from typing import Any

AUDIO_MARK = "<|audio|>"

# A plain template for models whose tokenizer has none (the ``tiny`` preset, bare LMs).
SIMPLE_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def flatten(messages: list[dict[str, Any]], mark: str = AUDIO_MARK) -> list[dict[str, str]]:
    """Messages with string content: ``{"type": "audio"}`` parts become ``mark``."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            parts = []
            for p in c:
                if not isinstance(p, dict):
                    parts.append(str(p))
                elif p.get("type") == "audio" or "audio" in p or "audio_url" in p:
                    parts.append(mark)
                elif "text" in p:
                    parts.append(str(p["text"]))
            c = "".join(parts)
        out.append({"role": m.get("role", "user"), "content": "" if c is None else str(c)})
    return out


def answer_suffix_text(render, prompt_msgs: list, answer: str, eos_token: str | None) -> str:
    """The text the template appends after the prompt for an assistant turn ``answer``, cut right
    after its end-of-turn marker. ``render(msgs, add_generation_prompt)`` renders the template."""
    prompt = render(prompt_msgs, True)
    full = render(prompt_msgs + [{"role": "assistant", "content": answer}], False)
    if full.startswith(prompt) and answer in full[len(prompt) :]:
        tail = full[len(prompt) :]
        i = tail.index(answer) + len(answer)
        rest = tail[i:]
        # keep up to the first end-of-turn marker (e.g. "<|im_end|>"), drop a trailing newline
        end = rest.lstrip()
        for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", eos_token or "\0"):
            if marker and end.startswith(marker):
                return tail[:i] + marker
        if eos_token and eos_token in rest:
            return tail[: i + rest.index(eos_token) + len(eos_token)]
        return tail[:i] + (eos_token or "")
    return answer + (eos_token or "")


def end_of_turn_id(render, probe_msgs: list, tokenizer) -> int | None:
    """Id of the marker the template writes after an assistant answer (e.g. ``<|im_end|>``), when
    it is one known token of ``tokenizer``; else None. Generation stops there as at EOS."""
    tail = answer_suffix_text(render, probe_msgs, "xyz", tokenizer.eos_token)
    end = tail[tail.index("xyz") + 3 :]
    if end:
        tid = tokenizer.convert_tokens_to_ids(end)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            return tid
    return None


class PromptCache:
    """Token ids of prompts and answers, computed once per distinct conversation."""

    def __init__(self, fn):
        self.fn = fn
        self._cache: dict[str, Any] = {}

    def __call__(self, prompt_msgs: list, answer: str | None):
        key = json.dumps([prompt_msgs, answer], sort_keys=True)
        v = self._cache.get(key)
        if v is None:
            v = self.fn(prompt_msgs, answer)
            if len(self._cache) < 200_000:
                self._cache[key] = v
        return v
