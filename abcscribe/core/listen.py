"""Choosing what to write by what the model hears.

A model that reads abcscribe's note encoder (``notes:DIR``) has, beside its language model, a
frame-level account of the clip: where notes start and at which pitch (the encoder's onset and
frame maps). The language model writes the music (metre, tempo, bars, voices, instruments);
among several texts it could write, :func:`pick_by_ear` keeps the one whose notes agree most
with what the encoder heard, trying each text under other key signatures too (the letters a
small LM writes are usually right where its ``K:`` is not, and the key decides every sharp and
flat).

Agreement is the onset F-measure between the notes a text sounds and the notes heard: same
pitch, onsets within :data:`TOLERANCE` seconds (the 50 ms of the note-F1 metric, rounded down
to whole encoder frames).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

HEARD_THRESHOLD = 0.5  # onset probability of a heard note start (what the encoder trained for)
TOLERANCE = 0.04  # seconds between a written and a heard onset that still match
SIGNATURES = range(-6, 7)  # key signatures tried: six flats .. six sharps
# modes a respelled key keeps its tonic in, most familiar first
_TONIC_MODES = ("major", "minor", "mixolydian", "dorian")
_KEY_LINE = re.compile(r"^K:[ \t]*(?P<key>[A-G][#b]?[ \t]*[A-Za-z]*)", re.MULTILINE)

Notes = list[tuple[float, int]]  # (onset seconds, MIDI pitch)


def hears(model: Any) -> bool:
    """Whether ``model`` reads a note encoder (so :func:`heard_notes` can listen for it)."""
    features = getattr(model, "features", None)
    return bool(features is not None and str(features.encoder_name).startswith("notes:"))


def heard_notes(model: Any, record: dict[str, Any], threshold: float = HEARD_THRESHOLD) -> Notes | None:
    """Note starts the model's note encoder hears in ``record``'s clip, or None for a model
    without one."""
    if not hears(model):
        return None
    from abcscribe.core.note_encoder import FRAME_RATE, N_BINS, frame_notes

    feats = np.asarray(model.features.get(record))
    onset, frame = feats[:, :N_BINS], feats[:, N_BINS : 2 * N_BINS]
    return [(t / FRAME_RATE, p) for t, p in frame_notes(onset, frame, threshold)]


def written_notes(text: str) -> Notes | None:
    """Notes an ABC text sounds (drums left out), or None when it is no readable tune."""
    from abcscribe.core.abc import extract_abc, read_abc

    try:
        piece, _ = read_abc(extract_abc(text or ""))
    except Exception:  # a model's text: anything may come
        return None
    notes = [(piece.seconds(n.start), n.pitch) for v in piece.voices if not v.drum for n in v.notes]
    return notes or None


def agreement(heard: Notes, written: Notes | None) -> float:
    """Onset F-measure of ``written`` against ``heard`` (one-to-one, equal pitch, onsets within
    :data:`TOLERANCE`); -1 for a text with no notes."""
    from abcscribe.core.note_encoder import matched_onsets

    if not written:
        return -1.0
    if not heard:
        return 0.0
    return 2.0 * matched_onsets(written, heard, TOLERANCE) / (len(heard) + len(written))


def respellings(text: str) -> list[str]:
    """``text`` under each key signature of :data:`SIGNATURES` (its own first): the ``K:``
    header rewritten, the letters left as the model wrote them. A respelled key keeps the
    model's tonic where a common mode of it has the signature (G -> Gm), else it is named as a
    key of the model's mode."""
    from abcscribe.core.abc.keys import key_from_tonic, key_text, parse_key
    from abcscribe.core.notes import Key

    m = _KEY_LINE.search(text)
    if not m:
        return [text]
    key, _, recognised = parse_key(m.group("key"))
    if key is None or not recognised:
        return [text]
    names = []
    for fifths in SIGNATURES:
        if fifths == key.fifths:
            continue
        for mode in (key.mode, *_TONIC_MODES):
            if key_from_tonic(key.tonic, mode).fifths == fifths:
                name = key_text(Key(fifths, mode, key.tonic))
                break
        else:
            name = key_text(Key(fifths, key.mode, ""))
        names.append(name)
    a, b = m.span("key")
    return [text] + [text[:a] + name + text[b:] for name in names]


def pick_by_ear(texts: list[str], heard: Notes) -> str:
    """The text (maybe respelled) whose notes agree most with ``heard``; among equals the
    earliest text in its own spelling."""
    best, best_score = texts[0] if texts else "", -2.0
    for text in dict.fromkeys(texts):  # samples often repeat the greedy text: judged once
        for candidate in respellings(text):
            s = agreement(heard, written_notes(candidate))
            if s > best_score + 1e-12:
                best, best_score = candidate, s
    return best
