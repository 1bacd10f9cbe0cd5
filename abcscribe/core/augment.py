"""More training clips from the ones there are, on stored CQT frames: transposed (the frames
shifted along the pitch axis, the answer's notes and key moved with them) and time-stretched
(the frames resampled in time, the answer's tempo scaled). A constant-Q spectrum moves by one
bin per semitone, so a shifted clip is what the same tune played higher or lower looks like;
the model then meets each tune in several keys and tempos and learns to read pitch and time
rather than remember its tunes.

    augment_record(record, out_path, semitones=2)   # a new record with its own .safetensors"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from abcscribe.core.errors import UserError

LOWEST, HIGHEST = 36, 107  # the CQT's range (C2..B7)


def transpose_abc(abc: str, semitones: int) -> str:
    """``abc`` with every pitched note moved by ``semitones`` and the key signature with them."""
    from abcscribe.core.abc import read_abc, write_abc
    from abcscribe.core.midi import key_from_fifths

    piece, _ = read_abc(abc)
    for v in piece.voices:
        if not v.drum:
            for n in v.notes:
                n.pitch += semitones
    if piece.key is not None:
        # up a semitone is 7 fifths round the circle; keep signatures of at most 6 accidentals
        fifths = (piece.key.fifths + 7 * semitones + 6) % 12 - 6
        piece.key = key_from_fifths(fifths, piece.key.mode)
    return write_abc(piece)


def stretch_abc(abc: str, rate: float) -> str:
    """``abc`` played ``rate`` times as fast: the same notes, the tempo scaled."""
    from abcscribe.core.abc import read_abc, write_abc
    from abcscribe.core.notes import Tempo

    piece, _ = read_abc(abc)
    piece.tempos = [Tempo(t.tick, float(round(t.bpm * rate))) for t in piece.tempos]
    return write_abc(piece)


def pitch_range(abc: str) -> tuple[int, int] | None:
    from abcscribe.core.abc import read_abc

    pitches = [n.pitch for v in read_abc(abc)[0].voices if not v.drum for n in v.notes]
    return (min(pitches), max(pitches)) if pitches else None


def shift_frames(cqt: np.ndarray, semitones: int) -> np.ndarray:
    """CQT frames [t, bins] moved ``semitones`` bins up (down when negative); the bins left
    empty take each frame's quietest value."""
    out = np.empty_like(cqt)
    floor = cqt.min(axis=1, keepdims=True)
    out[:] = floor
    if semitones > 0:
        out[:, semitones:] = cqt[:, :-semitones]
    elif semitones < 0:
        out[:, :semitones] = cqt[:, -semitones:]
    else:
        out[:] = cqt
    return out


def stretch_frames(cqt: np.ndarray, rate: float) -> np.ndarray:
    """CQT frames of the same audio played ``rate`` times as fast (linear interpolation)."""
    n = max(1, int(round(len(cqt) / rate)))
    pos = np.minimum(np.arange(n) * rate, len(cqt) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(cqt) - 1)
    w = (pos - lo)[:, None]
    return ((1 - w) * cqt[lo] + w * cqt[hi]).astype(np.float32)


def augment_record(record: dict[str, Any], out_path: str | Path, *, semitones: int = 0,
                   rate: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """A copy of ``record`` (which has stored CQT frames, see ``note_encoder.stored_cqt``)
    transposed by ``semitones`` and sped up by ``rate``; its frames are written to ``out_path``.
    A UserError when the record has no CQT frames or the notes would leave C2..B7."""
    from abcscribe.core.encoders import save_embeddings
    from abcscribe.core.models.records import answer_of
    from abcscribe.core.note_encoder import stored_cqt

    cqt = stored_cqt(record)
    abc = record.get("abc") or answer_of(record)
    if cqt is None or not abc:
        raise UserError(f"{record.get('id', 'record')}: no stored CQT frames and ABC to augment")
    span = pitch_range(abc)
    if semitones and span and not (LOWEST <= span[0] + semitones and span[1] + semitones <= HIGHEST):
        raise UserError(f"{record.get('id', 'record')}: transposed by {semitones} it leaves C2..B7")
    if semitones:
        abc, cqt = transpose_abc(abc, semitones), shift_frames(cqt, semitones)
    if rate != 1.0:
        abc, cqt = stretch_abc(abc, rate), stretch_frames(cqt, rate)
    duration = len(cqt) / 50.0
    save_embeddings(out_path, cqt, {"encoder": "cqt", "layer": "last", "frame_rate": 50.0,
                                    "sample_rate": 16000, "duration": duration, "offset": 0.0,
                                    "pool_ms": 0.0, "frames": len(cqt), "dim": cqt.shape[1],
                                    "source": f"{record.get('embedding')} (augmented)"})  # fmt: skip
    new = copy.deepcopy(record)
    tag = "".join([f"t{semitones:+d}" if semitones else "", f"x{rate:.2f}" if rate != 1.0 else ""])
    new.update(id=f"{record.get('id', 'record')}+{tag}", embedding=str(out_path), offset=0.0,
               duration=duration, abc=abc, augmented={"semitones": semitones, "rate": rate})  # fmt: skip
    for msg in reversed(new.get("messages") or []):
        if msg.get("role") == "assistant":
            msg["content"] = abc
            break
    return new
