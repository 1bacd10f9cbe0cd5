"""The reader's two ways agree: the quick way of _TuneReader.music for a plain note (outside
tuplets, broken rhythms and chords) and the general code music() reads every note with when
the quick way is off (fast=False) read every tune of music21's ABC corpus, and mutated copies
of them, to the same Piece and the same warnings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abcscribe.core.abc.reader import _as_text, _split_tunes, _TuneReader


def both_ways(lines):
    """(Piece, warnings) of one tune's lines read with the quick way and without it."""
    out = []
    for fast in (True, False):
        try:
            out.append(_TuneReader(list(lines), fast=fast).read())
        except Exception as e:  # noqa: BLE001 - both paths must fail alike too
            out.append(repr(e))
    return out


def same(a, b) -> bool:
    return a == b  # Piece, Voice and Note are dataclasses: equal when every field is


def corpus_texts():
    root = Path(importlib.util.find_spec("music21").origin).parent / "corpus"
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*.abc"))]


def test_both_paths_read_every_corpus_tune_alike():
    differ, tunes = [], 0
    for path, data in corpus_texts():
        for lines in _split_tunes(_as_text(data)):
            tunes += 1
            fast, general = both_ways(lines)
            if not same(fast, general):
                differ.append(f"{path.name}: {(lines[:2])}")
    assert tunes > 10_000
    assert differ == []


_TUNES: list[list[str]] = []


def some_tunes():
    if not _TUNES:
        for _, data in corpus_texts()[::40]:
            _TUNES.extend(_split_tunes(_as_text(data))[:3])
    return _TUNES


MUTATION = st.tuples(st.integers(0, 10**6), st.integers(0, 3),
                     st.sampled_from(list("^_=,'/2345-[]()|:<>zxZ{}\"!.~&%\\ \nKLMQV:18")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.lists(MUTATION, min_size=1, max_size=12))
def test_both_paths_read_mutated_tunes_alike(which, mutations):
    tunes = some_tunes()
    text = "\n".join(tunes[which % len(tunes)])
    for at, op, ch in mutations:
        i = at % (len(text) + 1)
        if op == 0:
            text = text[:i] + ch + text[i:]  # insert
        elif op == 1:
            text = text[:i] + text[i + 1:]  # delete
        elif op == 2:
            text = text[:i] + ch + text[i + 1:]  # replace
        else:
            text = text[:i] + text[i:i + 8] * 2 + text[i + 8:]  # repeat a stretch
    for lines in _split_tunes(text) if text.strip() else []:
        fast, general = both_ways(lines)
        assert same(fast, general), (text, fast, general)
