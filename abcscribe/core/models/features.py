"""Audio features for the composed model: a record's precomputed embeddings (``embed``), or its
audio encoded on the fly by an encoder of ``core.encoders``. Features of a record are computed
once per process and cached, so training epochs never decode audio again."""

from __future__ import annotations

from typing import Any

import numpy as np

from abcscribe.core.errors import UserError
from abcscribe.core.models.records import load_clip, load_embedding


def get_encoder(name: str):
    """``core.encoders.get_encoder(name)``; a built-in CQT while that module is not there."""
    try:
        from abcscribe.core.encoders import get_encoder as _get
    except ImportError:
        if name != "cqt":
            raise UserError(f"encoder {name!r} needs abcscribe.core.encoders") from None
        return _CQT()
    return _get(name)


class FeatureSource:
    """Features [frames, dim] float32 for records, cached by (audio, offset, duration) or by
    embedding path."""

    def __init__(self, encoder: str, dim: int, frame_rate: float, window_seconds: float):
        self.encoder_name = encoder
        self.dim = dim
        self.frame_rate = frame_rate
        self.window_seconds = window_seconds
        self._encoder = None
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = get_encoder(self.encoder_name)
        return self._encoder

    def key(self, record: dict[str, Any]) -> tuple:
        if record.get("embedding"):
            return ("emb", str(record["embedding"]), record.get("offset"), record.get("duration"))
        return ("audio", str(record.get("audio")), record.get("offset"), record.get("duration"))

    def get(self, record: dict[str, Any]) -> np.ndarray:
        k = self.key(record)
        feats = self._cache.get(k)
        if feats is None:
            feats = self._compute(record)
            self._cache[k] = feats
        return feats

    def _compute(self, record: dict[str, Any]) -> np.ndarray:
        if record.get("embedding"):
            emb, _ = load_embedding(record, max_seconds=self.window_seconds)
        else:
            enc = self.encoder
            audio = load_clip(record, enc.sample_rate, max_seconds=self.window_seconds)
            emb = enc.encode(audio)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise UserError(
                f"{record.get('id', 'record')}: embeddings of shape {tuple(emb.shape)} do not fit "
                f"this model (expects [frames, {self.dim}] from encoder {self.encoder_name!r})"
            )
        if len(emb) == 0:
            emb = np.zeros((1, self.dim), np.float32)
        return emb


class _CQT:
    """Built-in constant-Q features, as the ``cqt`` encoder of core.encoders specifies: 16 kHz,
    hop 320 (50 frames/s), 72 bins from C2, 12 per octave, log magnitude scaled to ~[0, 1]."""

    name = "cqt"
    sample_rate = 16000
    frame_rate = 50.0
    dim = 72
    window_seconds = 30.0

    def encode(self, audio: np.ndarray) -> np.ndarray:
        import librosa

        audio = np.asarray(audio, dtype=np.float32)
        n = 1 + len(audio) // 320
        if len(audio) < 2048:
            audio = np.pad(audio, (0, 2048 - len(audio)))
        c = np.abs(
            librosa.cqt(
                audio,
                sr=self.sample_rate,
                hop_length=320,
                fmin=librosa.note_to_hz("C2"),
                n_bins=72,
                bins_per_octave=12,
            )
        )
        db = librosa.amplitude_to_db(c, ref=1.0, top_db=None)
        x = np.clip((db + 80.0) / 80.0, 0.0, 1.0).T[:n]
        return x.astype(np.float32)
