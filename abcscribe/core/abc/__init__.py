"""ABC notation <-> Piece.

    keys     key signatures, K: texts, key estimation, pitch spelling
    writer   Piece -> ABC: exact onsets and durations in notation an engraver reads (notes split
             at bar lines and into single note values with ties, tuplets for off-grid lengths,
             overlapping notes of a track as voices sharing its staff)
    reader   ABC -> Piece: a tolerant reader that never raises on a malformed body; it returns
             what it could read plus a list of warnings
    extract  the ABC tunes inside a language model's prose answer
"""

from abcscribe.core.abc.extract import extract_abc, tune_numbers
from abcscribe.core.abc.keys import (
    MODE_OFFSET,
    estimate_key,
    key_from_tonic,
    key_text,
    parse_key,
    signature,
)
from abcscribe.core.abc.reader import read_abc, read_abc_tunes
from abcscribe.core.abc.writer import DEFAULT_UNIT, LAYOUTS, parse_unit, write_abc

__all__ = [
    "DEFAULT_UNIT", "LAYOUTS", "MODE_OFFSET", "estimate_key", "extract_abc", "key_from_tonic",
    "key_text", "parse_key", "parse_unit", "read_abc", "read_abc_tunes", "signature",
    "tune_numbers", "write_abc",
]
