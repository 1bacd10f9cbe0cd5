"""ABC inside prose: the tunes a language model's answer holds, and tune numbers."""

from __future__ import annotations

import re

from abcscribe.core.abc.reader import _FIELD_LINE, _as_text, _split_tunes

# ---- ABC inside prose ---------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_HEADER_LINE = re.compile(r"^\s*[XTMLKQV]:\s*\S")
_X_LINE = re.compile(r"^\s*X:\s*\d")


def extract_abc(text: str) -> str:
    """The ABC in a language model's answer: the first fenced block that holds ABC (or is
    tagged ``abc``), else the lines from the first header field on; the text itself otherwise."""
    if not isinstance(text, str):
        text = _as_text(text)
    for m in _FENCE.finditer(text) if "```" in text else ():
        lang, body = m.group(1).lower(), m.group(2)
        if lang == "abc" or any(_HEADER_LINE.match(ln) for ln in body.split("\n")):
            return body.strip() + "\n"
    lines = text.split("\n")
    start = None
    for i, ln in enumerate(lines):
        if _X_LINE.match(ln):
            start = i
            break
    if start is None:
        for i, ln in enumerate(lines):
            if _HEADER_LINE.match(ln):
                start = i
                break
    if start is None:
        return text.strip() + ("\n" if text.strip() else "")
    end = len(lines)
    for i in range(start, end):
        ln = lines[i]
        if "|" in ln:  # a bar line: never prose (the common case, checked first)
            continue
        s = ln.strip()
        if s and not _FIELD_LINE.match(s) and not s.startswith("%") and _is_prose(s):
            end = i
            break
    out = list(map(str.rstrip, lines[start:end]))
    # short closing prose after the last music line ("Enjoy playing it!")
    while out and (not out[-1].strip() or _is_closing_prose(out[-1].strip())):
        out.pop()
    return "\n".join(out).strip() + "\n"


def _is_prose(s: str) -> bool:
    if "|" in s:
        return False
    words = _WORDS3.findall(s)
    return len(words) >= 4 and sum(len(w) for w in words) > 0.5 * len(s)


_WORDS3 = re.compile(r"[A-Za-z]{3,}")


def _is_closing_prose(s: str) -> bool:
    """A line of words after the music: no bar line, chord or field, at least two words, mostly
    letters, and a word of three or more letters that are not all note names (``abc def`` is
    music, ``Enjoy playing it!`` is not)."""
    if "|" in s or _FIELD_LINE.match(s) or s.startswith("%") or "[" in s:
        return False
    words = re.findall(r"[A-Za-z']+", s)
    if len(words) < 2 or sum(len(w) for w in words) < 0.6 * len(s.replace(" ", "")):
        return False
    return any(len(w) >= 3 and re.search(r"[h-wyH-WY]", w) for w in words)


def tune_numbers(text: str) -> list[int | None]:
    """The X: number of each tune ``read_abc_tunes`` returns (None where it has none)."""
    out: list[int | None] = []
    for lines in _split_tunes(_as_text(text)):
        num = None
        for ln in lines:
            if ln.startswith("X:"):
                m = re.match(r"X:\s*(\d+)", ln)
                num = int(m.group(1)) if m else None
                break
        out.append(num)
    return out
