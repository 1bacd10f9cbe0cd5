"""Audio features for the composed model: a record's precomputed embeddings (``embed``), or its
audio encoded on the fly by an encoder of ``core.encoders``. Features of a record are computed
once per process and cached, so training epochs never decode audio again."""

from __future__ import annotations

from typing import Any

import numpy as np

from abcscribe.core.errors import UserError
from abcscribe.core.models.records import load_clip, load_embedding


def get_encoder(name: str):
    """The encoder ``name`` of ``core.encoders`` (on the CPU: features are computed once per
    record and cached)."""
    from abcscribe.core.encoders import get_encoder as _get

    return _get(name, device="cpu")


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

    def cached(self, keys) -> dict[tuple, np.ndarray]:
        """The features computed so far of these keys (see :meth:`key`)."""
        return {k: self._cache[k] for k in keys if k in self._cache}

    def adopt(self, features: dict[tuple, np.ndarray]) -> None:
        """Take features computed elsewhere (another process of the same run) into the cache."""
        self._cache.update(features)

    def _compute(self, record: dict[str, Any]) -> np.ndarray:
        if record.get("embedding"):
            emb, meta = load_embedding(record, max_seconds=self.window_seconds)
            if self.encoder_name.startswith("notes:") and meta.get("encoder") == "cqt":
                # stored CQT frames: the note encoder is a network over them
                emb = self.encoder.from_cqt(emb)
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
