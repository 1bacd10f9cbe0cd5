"""Keys and pitch spelling: key signatures, K: texts, key estimation, and how a MIDI pitch
is written under a signature."""

from __future__ import annotations

import math
import re

from abcscribe.core.notes import Key, Piece


# ---- pitch and key tables ------------------------------------------------------------------
_LETTERS = "CDEFGAB"
_LETTER_PC = (0, 2, 4, 5, 7, 9, 11)
_LETTER_INDEX = {c: i for i, c in enumerate(_LETTERS)}
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SHARP_ORDER = (3, 0, 4, 1, 5, 2, 6)  # F C G D A E B as letter indices
_FLAT_ORDER = (6, 2, 5, 1, 4, 0, 3)  # B E A D G C F
_ACC_TEXT = {-2: "__", -1: "_", 0: "=", 1: "^", 2: "^^"}
_ACC_VALUE = {"__": -2, "_": -1, "=": 0, "^": 1, "^^": 2}

# mode -> fifths relative to the major key on the same tonic
MODE_OFFSET = {
    "major": 0, "ionian": 0, "mixolydian": -1, "dorian": -2, "minor": -3, "aeolian": -3,
    "phrygian": -4, "locrian": -5, "lydian": 1,
}
_MODE_ABBREV = {
    "maj": "major", "ion": "ionian", "mix": "mixolydian", "dor": "dorian", "min": "minor",
    "m": "minor", "aeo": "aeolian", "phr": "phrygian", "loc": "locrian", "lyd": "lydian",
}
_MODE_WRITE = {
    "major": "", "ionian": "", "minor": "m", "aeolian": "m", "dorian": "dor",
    "phrygian": "phr", "lydian": "lyd", "mixolydian": "mix", "locrian": "loc",
}


def _fifths_name(f: int) -> str:
    """Name of the major tonic ``f`` fifths from C (F# for 6, Bb for -2, ...)."""
    letter = "FCGDAEB"[(f + 1) % 7]
    acc = (f + 1) // 7
    return letter + ("#" * acc if acc > 0 else "b" * -acc)


def signature(fifths: int) -> list[int]:
    """Accidental (-2..2) of each letter C..B under a key signature of ``fifths``."""
    sig = [0] * 7
    if fifths > 0:
        for i in range(fifths):
            sig[_SHARP_ORDER[i % 7]] += 1
    elif fifths < 0:
        for i in range(-fifths):
            sig[_FLAT_ORDER[i % 7]] -= 1
    return sig


def key_from_tonic(tonic: str, mode: str = "major") -> Key:
    """Key for a tonic name (``F#``, ``Bb``) and a mode name."""
    letter = tonic[:1].upper()
    acc = tonic[1:].count("#") - tonic[1:].count("b")
    fifths = _LETTER_FIFTHS.get(letter, 0) + 7 * acc + MODE_OFFSET.get(mode, 0)
    return Key(fifths, mode, letter + tonic[1:])


def key_text(key: Key | None) -> str:
    """The ``K:`` value for a key (``G``, ``Am``, ``Ddor``; ``none`` for None)."""
    if key is None:
        return "none"
    mode = key.mode if key.mode in MODE_OFFSET else "major"
    tonic = _fifths_name(key.fifths - MODE_OFFSET[mode])
    return tonic + _MODE_WRITE[mode]


# Krumhansl-Kessler key profiles (major, minor), tonic first.
_KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
_KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def estimate_key(piece: Piece) -> Key:
    """Most likely major/minor key: Krumhansl-Schmuckler correlation of the duration-weighted
    pitch-class histogram (drums excluded). C major when there are no pitched notes."""
    hist = [0.0] * 12
    for v in piece.voices:
        if v.drum:
            continue
        for n in v.notes:
            hist[n.pitch % 12] += n.duration
    return _key_from_histogram(hist)


def _key_from_histogram(hist: list[float]) -> Key:
    """``estimate_key`` from the duration-weighted pitch-class histogram."""
    if not any(hist):
        return Key(0, "major", "C")

    def corr(prof, shift):
        xs = [hist[(shift + i) % 12] for i in range(12)]
        mx, my = sum(xs) / 12, sum(prof) / 12
        num = sum((x - mx) * (y - my) for x, y in zip(xs, prof))
        den = math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in prof))
        return num / den if den else 0.0

    best = None
    for pc in range(12):
        for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
            c = corr(prof, pc)
            if best is None or c > best[0] + 1e-12:
                best = (c, pc, mode)
    _, pc, mode = best
    # spell the tonic with the signature nearest to C
    off = MODE_OFFSET[mode]
    cands = [f for f in range(-7, 8) if (7 * (f - off)) % 12 == pc]
    f = min(cands, key=abs)
    return Key(f, mode, _fifths_name(f - off))


def parse_key(text: str) -> tuple[Key | None, list[int], bool]:
    """Parse a ``K:`` value. Returns (key or None for ``none``, accidental per letter C..B,
    recognised). Clefs and other keywords after the key are ignored."""
    s = text.strip()
    s = s.split("%", 1)[0].strip()
    low = s.lower()
    if low in ("", "none") or low.startswith("none "):
        return None, [0] * 7, bool(low)
    if low.startswith("hp"):  # Highland pipes: F# C#, G natural
        sig = [0] * 7
        sig[3] = sig[0] = 1
        return Key(2, "mixolydian", "A"), sig, True
    m = re.match(r"([A-Ga-g])([#b]?)\s*([A-Za-z]*)", s)
    if not m:
        # a clef or an instruction only ("K:bass", "K:clef=treble"): C major
        return Key(0, "major", "C"), [0] * 7, False
    tonic = m.group(1).upper() + m.group(2)
    mword = m.group(3).lower()
    mode = "major"
    rest = s[m.end():]
    if mword:
        ab = mword[:3]
        if mword == "m" or (mword.startswith("m") and ab not in ("maj", "mix") and len(mword) <= 3
                            and mword in ("m", "mi", "min")):
            mode = "minor"
        elif ab in _MODE_ABBREV:
            mode = _MODE_ABBREV[ab]
        else:
            rest = mword + rest  # not a mode: maybe "exp" or a clef word
    key = key_from_tonic(tonic, mode)
    sig = signature(key.fifths)
    toks = rest.split()
    if toks and toks[0].lower() == "exp":
        sig = [0] * 7
    for tok in toks:
        am = re.fullmatch(r"(\^\^|\^|__|_|=)([A-Ga-g])", tok)
        if am:
            sig[_LETTER_INDEX[am.group(2).upper()]] = _ACC_VALUE[am.group(1)]
    return key, sig, True


def _spelling(sig: list[int], fifths: int) -> list[tuple[int, int]]:
    """(letter index, accidental) for each pitch class under a key signature."""
    spell: list[tuple[int, int] | None] = [None] * 12
    for i in range(7):
        spell[(_LETTER_PC[i] + sig[i]) % 12] = (i, sig[i])
    for pc in range(12):
        if spell[pc] is not None:
            continue
        if pc in _LETTER_PC:
            spell[pc] = (_LETTER_PC.index(pc), 0)
        elif fifths >= 0:
            spell[pc] = (_LETTER_PC.index((pc - 1) % 12), 1)
        else:
            spell[pc] = (_LETTER_PC.index((pc + 1) % 12), -1)
    return spell  # type: ignore[return-value]


def _note_text(letter: int, octave: int) -> str:
    """ABC letter with octave marks; octave 4 is the one starting at middle C."""
    c = _LETTERS[letter]
    if octave >= 5:
        return c.lower() + "'" * (octave - 5)
    return c + "," * (4 - octave)
