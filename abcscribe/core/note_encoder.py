"""abcscribe's own music encoder: a small convolutional network over constant-Q frames,
pretrained with dense frame-level targets read from the training clips' scores (which pitches
start in each 20 ms frame, which sound, which instrument families play), as Onsets-and-Frames
and basic-pitch learn. Its last layer is what a composed model reads (``--encoder notes:DIR``):
onset and frame probabilities per semitone, family probabilities (the whole clip's, told from
statistics of its CQT by a head fitted after the network), a few timbre channels, and the CQT
frames it heard.

The network is pitch-equivariant: the same small filters slide over time and frequency of a
harmonic stack of the spectrum (each bin beside the bins of its 2nd..5th harmonics and the bins
it would be the 2nd..5th harmonic of, so a partial of a lower note is told from a note), so a note
learnt at one pitch is recognised at every other, which is what lets it learn on a CPU from a
few thousand clips and hear instruments it was not trained on.

    records (audio + ABC) --pretrain_encoder--> DIR (config.json + model.safetensors)
    get_encoder("notes:DIR").encode(audio) -> [frames, dim]"""

from __future__ import annotations

import sys
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from abcscribe.core import gm
from abcscribe.core.encoders import CQTEncoder, Encoder
from abcscribe.core.errors import UserError

N_BINS = 72  # the CQT's semitones, MIDI 36 (C2) .. 107 (B7)
LOWEST_PITCH = 36
FRAME_RATE = 50.0
N_FAMILIES = len(gm.FAMILIES) + 1  # the 16 GM families and drums
#: bins above a bin at its 1st..5th harmonics (12 * log2(h), rounded)
HARMONIC_SHIFTS = (0, 12, 19, 24, 28)
#: the stack new encoders hear: also the bins a bin would be the 2nd..5th harmonic of, so a
#: filter can tell a note from a partial of a lower note (octave and fifth ghosts)
BOTH_WAYS_SHIFTS = (-28, -24, -19, -12, 0, 12, 19, 24, 28)
#: bins above the loudest one whose level the clip-level family head reads
CLIP_SHIFTS = (12, 19, 24, 28, 31, 34, 36)
N_CLIP_STATISTICS = 2 * len(CLIP_SHIFTS) + 8


def clip_statistics(cqt):
    """[b, t, 72] CQT frames -> [b, N_CLIP_STATISTICS]: what tells instruments apart over a
    whole clip, read at each frame's loudest bin where it sounds (above the scale's middle):
    the level of the bins 1, 1.5, 2, 2.5, 3, 3.5 and 4 octaves above it relative to it (mean
    and spread: the partials), how that bin's level moves from frame to frame while it
    stays the loudest (mean, share falling, share rising, spread: decay, attacks, vibrato),
    the level's spread, the mean level below it (noise, lower voices), the share of bins
    above a quarter of the scale and the share of frames that sound."""
    import torch

    b, t, f = cqt.shape
    level, top = cqt.max(-1)  # [b, t]
    act = (level > 0.5).float()
    n_act = act.sum(1).clamp(min=1.0)

    def mean(x, w):  # over time, weighted
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    profile = []
    for s in CLIP_SHIFTS:
        idx = (top + s).clamp(max=f - 1)
        v = torch.gather(cqt, 2, idx[..., None])[..., 0] - level
        profile.append(torch.where(top + s < f, v, torch.full_like(v, -1.0)))
    profile = torch.stack(profile, -1)  # [b, t, 7]
    w = act[..., None]
    p_mean = (profile * w).sum(1) / n_act[:, None]
    p_std = (((profile - p_mean[:, None]) ** 2 * w).sum(1) / n_act[:, None]).sqrt()
    step = level[:, 1:] - level[:, :-1]
    held = ((top[:, 1:] == top[:, :-1]).float() * act[:, 1:] * act[:, :-1])
    s_mean = mean(step, held)
    s_std = mean((step - s_mean[:, None]) ** 2, held).sqrt()
    falling = mean((step < -0.004).float(), held)
    rising = mean((step > 0.01).float(), held)
    l_mean = mean(level, act)
    l_std = mean((level - l_mean[:, None]) ** 2, act).sqrt()
    below_sum = torch.cumsum(cqt, -1)
    below = torch.gather(below_sum, 2, (top - 1).clamp(min=0)[..., None])[..., 0] / top.clamp(min=1)
    bright = (cqt > 0.3).float().mean(-1)
    return torch.cat([p_mean, p_std, torch.stack([
        s_mean, falling, rising, s_std, l_std, mean(below, act), mean(bright, act),
        act.mean(1)], -1)], -1)  # fmt: skip


def _torch_modules():
    """The model classes, built on first use so that importing this module stays light."""
    global NoteEncoderConfig, NoteEncoderModel
    if "NoteEncoderModel" in globals():
        return NoteEncoderConfig, NoteEncoderModel
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel

    class _Config(PretrainedConfig):
        """Sizes of the note encoder; ``timbre`` channels are pooled over frequency into the
        output beside the note and family probabilities."""

        model_type = "abcscribe_notes"

        def __init__(self, channels: int = 16, layers: int = 3, timbre: int = 16,
                     shifts: Iterable[int] = HARMONIC_SHIFTS, freq_kernel: int = 3,
                     clip_families: bool = False, note_families: bool = False, **kwargs):
            self.channels = channels
            self.layers = layers
            self.timbre = timbre
            # (defaults: what encoders made before these fields existed)
            self.shifts = [int(s) for s in shifts]
            self.freq_kernel = int(freq_kernel)
            # the families from statistics of the whole clip (see clip_statistics), the same
            # for every frame, instead of from each frame's timbre
            self.clip_families = bool(clip_families)
            # a family per sounding pitch and frame (which instrument plays this note: what
            # tells the voices of an ensemble apart), fitted after the network; not in the
            # output layer, so a model reading the encoder sees the same with or without it
            self.note_families = bool(note_families)
            self.n_bins = N_BINS
            self.frame_rate = FRAME_RATE
            self.n_families = N_FAMILIES
            super().__init__(**kwargs)

        @property
        def output_dim(self) -> int:
            return 3 * self.n_bins + self.n_families + self.timbre

    class _Model(PreTrainedModel):
        """CQT frames [batch, time, 72] -> onset, frame logits [batch, time, 72], family logits
        [batch, time, 17] and the output layer [batch, time, output_dim]: onset, frame and
        family probabilities, timbre channels and the CQT frames themselves."""

        config_class = _Config
        base_model_prefix = "notes"
        main_input_name = "cqt"

        def __init__(self, config):
            super().__init__(config)
            c = config.channels
            # the first layer looks at 3 neighbouring frames and semitones of the harmonic
            # stack; the next ones only along time (dilated: 7, 15, ... frames of context), so
            # the cost stays small while onsets see what comes before and after
            k, n_in = config.freq_kernel, len(config.shifts)
            convs = [nn.Conv2d(n_in, c, (3, k), padding=(1, k // 2))]
            for i in range(1, config.layers):
                dil = 2 ** i
                convs.append(nn.Conv2d(c, c, (3, 1), padding=(dil, 0), dilation=(dil, 1)))
            self.convs = nn.ModuleList(convs)
            self.pitch_bias = nn.Parameter(torch.zeros(2, config.n_bins))
            self.notes = nn.Conv2d(c, 2, 1)  # onset, frame: the same filter at every pitch
            self.timbre = nn.Linear(c + n_in, config.timbre)
            self.families = nn.Linear(config.timbre, config.n_families)
            self.post_init()
            if config.clip_families:  # (after post_init: the layers above start as without it)
                n = N_CLIP_STATISTICS
                self.register_buffer("clip_mean", torch.zeros(n))
                self.register_buffer("clip_scale", torch.ones(n))
                self.clip_head = nn.Sequential(nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, config.n_families))
            if config.note_families:  # over the features and the harmonic stack at each pitch
                self.note_family_head = nn.Sequential(
                    nn.Conv2d(c + n_in, 32, (5, 1), padding=(2, 0)), nn.ReLU(),
                    nn.Conv2d(32, config.n_families, 1))

        def _init_weights(self, module):
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.05)
                nn.init.zeros_(module.bias)

        def features(self, cqt):
            """The network's features [b, channels, t, f] and the harmonic stack it read
            [b, shifts, t, f]."""
            # each frame relative to its mean over pitch: what stands out of the spectrum, not
            # how loud the recording is (the CQT's fixed dB scale is 0..1 for -60..+30 dB)
            x = (cqt - cqt.mean(-1, keepdim=True)) * 3.0 + 0.5
            h = harmonic_stack(x, self.config.shifts)  # [b, shifts, t, f]
            x = h
            for conv in self.convs:
                x = torch.relu(conv(x))
            return x, h

        def forward(self, cqt):
            """The maps of ``cqt`` [b, t, 72] by name, ``output`` the layer a model reads; the
            per-note family map is :meth:`note_family_logits` (nothing here depends on it, and
            it costs more than this whole pass)."""
            x, h = self.features(cqt)
            notes = self.notes(x) + self.pitch_bias[None, :, None, :]  # [b, 2, t, f]
            # timbre: the features and partials of the pitches that sound, whatever they are
            # (weights over pitch from the frame map), so an instrument sounds alike at any pitch
            # (detached: telling instruments apart must not move where the notes are)
            w = torch.softmax(notes[:, 1].detach(), -1).unsqueeze(1)  # [b, 1, t, f]
            pooled = torch.cat([(x * w).sum(-1), (h * w).sum(-1)], 1).transpose(1, 2)
            timbre = torch.tanh(self.timbre(pooled))
            frame_families = families = self.families(timbre)
            if self.config.clip_families:
                clip = self.clip_logits(clip_statistics(cqt))
                families = clip[:, None].expand(-1, cqt.shape[1], -1)
            onset, frame = notes[:, 0], notes[:, 1]
            # the layer a language model reads: what sounds where, and the spectrum itself
            # (instruments are told apart by their partials, which the note maps abstract away)
            out = torch.cat([torch.sigmoid(onset), torch.sigmoid(frame),
                             torch.sigmoid(families), timbre, cqt], -1)  # fmt: skip
            return {"onset": onset, "frame": frame, "families": families,
                    "frame_families": frame_families, "output": out}

        def note_family_logits(self, cqt):
            """The per-note family map [b, 17, t, f] of an encoder with ``note_families``: at
            each frame and pitch, which family a note sounding there plays in."""
            x, h = self.features(cqt)
            return self.note_family_head(torch.cat([x, h], 1))

        def clip_logits(self, stats):
            """Family logits [b, 17] of each clip from its :func:`clip_statistics`."""
            return self.clip_head((stats - self.clip_mean) / self.clip_scale)

    def harmonic_stack(cqt, shifts=HARMONIC_SHIFTS):
        """[b, t, f] -> [b, len(shifts), t, f]: channel k holds, at bin f, the magnitude at bin
        f + shifts[k] (zero beyond the bins)."""
        chans = []
        for s in shifts:
            if s > 0:
                chans.append(torch.nn.functional.pad(cqt[..., s:], (0, s)))
            elif s < 0:
                chans.append(torch.nn.functional.pad(cqt[..., :s], (-s, 0)))
            else:
                chans.append(cqt)
        return torch.stack(chans, 1)

    NoteEncoderConfig, NoteEncoderModel = _Config, _Model
    return _Config, _Model


def load_note_encoder(path: str | Path):
    """The pretrained note encoder saved in ``path`` (a ``save_pretrained`` folder)."""
    _, model_cls = _torch_modules()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a note encoder folder (no config.json); make one with "
                        "'abcscribe pretrain'")  # fmt: skip
    try:
        model = model_cls.from_pretrained(str(path))
    except Exception as e:
        raise UserError(f"{path}: cannot load the note encoder ({str(e).splitlines()[0]})") from None
    return model.eval()


class NoteEncoder(Encoder):
    """``notes:DIR``: CQT frames through the pretrained note encoder; 50 frames/s, dim
    3 * 72 + 17 + timbre channels."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        model = load_note_encoder(path)
        super().__init__(f"notes:{path}", 16000, FRAME_RATE, model.config.output_dim)
        self.model = model.to(device)
        self.device = device
        self.cqt = CQTEncoder()

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        return self.from_cqt(self.cqt.encode(audio))

    def from_cqt(self, cqt: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(cqt, np.float32))[None].to(self.device)
            return self.model(x)["output"][0].float().cpu().numpy()


# ---- targets ----------------------------------------------------------------------------------
def clip_targets(abc: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset [n, 72], frame [n, 72] and family [n, 17] rolls (0/1 float32) of a clip's ABC, at
    50 frames per second from the clip's start. Notes outside C2..B7 are left out."""
    return _target_rolls(abc, n)[:3]


def _target_rolls(abc: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rolls of :func:`clip_targets` and the note family roll: [n, 72] float32, at each
    frame and pitch a note sounds 1 + its voice's family (:func:`gm.voice_family`), 0 where
    none does."""
    from abcscribe.core.abc import read_abc

    piece, _ = read_abc(abc)
    onset = np.zeros((n, N_BINS), np.float32)
    frame = np.zeros((n, N_BINS), np.float32)
    fams = np.zeros((n, N_FAMILIES), np.float32)
    note_fams = np.zeros((n, N_BINS), np.float32)
    for v in piece.voices:
        fam = gm.voice_family(v.program, v.drum)
        for note in v.notes:
            a = int(round(piece.seconds(note.start) * FRAME_RATE))
            b = max(a + 1, int(round(piece.seconds(note.end) * FRAME_RATE)))
            if a >= n:
                continue
            fams[a:b, fam] = 1.0
            p = note.pitch - LOWEST_PITCH
            if v.drum or not 0 <= p < N_BINS:
                continue
            onset[a, p] = 1.0
            frame[a:b, p] = 1.0
            note_fams[a:b, p] = 1 + fam
    return onset, frame, fams, note_fams


def record_example(record: dict[str, Any], cqt_encoder: CQTEncoder) -> dict[str, np.ndarray]:
    """CQT frames and target rolls of one record (its audio clip and its ``abc``)."""
    from abcscribe.core.models.records import load_clip

    abc = record.get("abc") or ""
    if not abc.strip():
        raise UserError(f"{record.get('id', 'record')}: no 'abc' to learn notes from")
    cqt = stored_cqt(record)
    if cqt is None:
        cqt = cqt_encoder.encode(load_clip(record, cqt_encoder.sample_rate))
    onset, frame, fams, note_fams = _target_rolls(abc, len(cqt))
    return {"cqt": cqt, "onset": onset, "frame": frame, "families": fams,
            "note_families": note_fams}


def stored_cqt(record: dict[str, Any]) -> np.ndarray | None:
    """The record's precomputed CQT frames (``embed --encoder cqt --pool-ms 0``), if it has
    them: the note encoder then reads them instead of the audio."""
    from abcscribe.core.models.records import load_embedding

    if not record.get("embedding"):
        return None
    emb, meta = load_embedding(record)
    if meta.get("encoder") != "cqt" or float(meta.get("pool_ms") or 0) > 0:
        return None
    return np.asarray(emb, np.float32)


# ---- evaluation -------------------------------------------------------------------------------
#: the onset probability a heard note starts at (val's choice for encoders that hear both ways)
ONSET_THRESHOLD = 0.6


def frame_notes(onset: np.ndarray, frame: np.ndarray, threshold: float = ONSET_THRESHOLD,
                frame_threshold: float | None = None,
                release: float | None = None) -> list[tuple[int, int]]:
    """(frame index, pitch) of note starts, in time order: one per run of frames where the
    pitch sounds (frame >= ``frame_threshold``, default ``threshold``) and its onset
    probability stays at or above ``release`` (default half of ``threshold``), at the run's
    first frame whose onset reaches ``threshold``. A note's onset probability that dips and
    rises again while it sounds starts no second note; a pitch the frame map does not hold
    (a partial of a lower note, mostly) starts none."""
    frame_threshold = threshold if frame_threshold is None else frame_threshold
    release = threshold * 0.5 if release is None else min(release, threshold)
    held = (onset >= release) & (frame >= frame_threshold)
    hits = held & (onset >= threshold)
    if not hits.any():
        return []
    # runs of held frames, numbered per pitch; the first hit of each run starts a note
    first = held & ~np.vstack([np.zeros((1, held.shape[1]), bool), held[:-1]])
    run = np.cumsum(first, 0)
    p, t = np.nonzero(hits.T)  # pitch-major, time ascending within a pitch
    key = p.astype(np.int64) * (len(onset) + 1) + run[t, p]
    keep = np.ones(len(key), bool)
    keep[1:] = key[1:] != key[:-1]
    notes = sorted(zip(t[keep].tolist(), p[keep].tolist()))
    return [(f, q + LOWEST_PITCH) for f, q in notes]


def onset_pairs(ref: list[tuple[float, int]], est: list[tuple[float, int]], tol: float) -> list[tuple[int, int]]:
    """(index in ``ref``, index in ``est``) of the (time, pitch) notes matched one-to-one: same
    pitch, times within ``tol``. In time order each ``ref`` note takes the earliest free match,
    which for windows of one width is a largest matching."""
    times: dict[int, list[tuple[float, int]]] = {}
    for j in sorted(range(len(est)), key=lambda j: est[j]):
        times.setdefault(est[j][1], []).append((est[j][0], j))
    taken: dict[int, set[int]] = {}
    pairs = []
    for i in sorted(range(len(ref)), key=lambda i: ref[i]):
        t, p = ref[i]
        ts = times.get(p)
        if not ts:
            continue
        used = taken.setdefault(p, set())
        k = bisect_left(ts, (t - tol - 1e-9,))
        while k < len(ts) and ts[k][0] <= t + tol + 1e-9:
            if k not in used:
                used.add(k)
                pairs.append((i, ts[k][1]))
                break
            k += 1
    return pairs


def matched_onsets(ref: Iterable[tuple[float, int]], est: Iterable[tuple[float, int]], tol: float) -> int:
    """How many (time, pitch) notes of ``ref`` match one of ``est`` each (:func:`onset_pairs`)."""
    return len(onset_pairs(list(ref), list(est), tol))


def onset_f1(ref: list[tuple[int, int]], est: list[tuple[int, int]], tol: int = 2) -> tuple[int, int, int]:
    """(matched, n_ref, n_est): :func:`matched_onsets` of notes in frames within ``tol`` frames."""
    return matched_onsets(ref, est, tol), len(ref), len(est)


# ---- pretraining ------------------------------------------------------------------------------
def pretrain_encoder(
    train: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    val: list[dict[str, Any]] | None = None,
    steps: int = 800,
    batch_size: int = 8,
    lr: float = 1e-2,
    channels: int = 16,
    layers: int = 3,
    timbre: int = 16,
    seed: int = 0,
    log=None,
    shifts: Iterable[int] = BOTH_WAYS_SHIFTS,
    freq_kernel: int = 3,
    clip_families: bool = True,
    note_families: bool = True,
    onset_weight: float = 30.0,
    frame_weight: float = 5.0,
    tilt: float = 0.15,
    family_batches: int = 600,
) -> dict[str, Any]:
    """Train a note encoder on ``train`` records (audio clips with their ``abc``) and save it to
    ``out_dir``; returns the figures written to its ``pretrain.json`` (val onset F1 at 40 ms,
    frame F1, family accuracy). ``shifts``: the harmonic stack (both ways by default);
    ``tilt``: the largest random spectral slope and per-band gain added to training clips'
    CQT, another soundfont's colour on the same notes (0: loudness jitter only);
    ``family_batches``: the batches the per-note family head is fitted on afterwards."""
    import torch
    import torch.nn.functional as F

    config_cls, model_cls = _torch_modules()
    ONSET_WEIGHT, FRAME_WEIGHT = torch.tensor(float(onset_weight)), torch.tensor(float(frame_weight))
    log = log or (lambda msg: print(msg, file=sys.stderr))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cqt = CQTEncoder()
    t0 = time.time()
    examples = _examples(train, cqt, log, "train")
    if not examples:
        raise UserError("no usable training records (each needs audio and 'abc')")
    val_examples = _examples(val or [], cqt, log, "val")
    log(f"pretrain: {len(examples)} train clips, {len(val_examples)} val clips "
        f"(features in {time.time() - t0:.0f} s)")  # fmt: skip
    model = model_cls(config_cls(channels=channels, layers=layers, timbre=timbre, shifts=shifts,
                                 freq_kernel=freq_kernel, clip_families=clip_families,
                                 note_families=note_families))  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps),
                                                pct_start=0.1)  # fmt: skip
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        batch = _batch([examples[i] for i in rng.integers(0, len(examples), batch_size)], rng,
                       tilt=tilt)  # fmt: skip
        out = model(batch["cqt"])
        loss = (
            # positives are rare (a note starts in one of ~10,000 frame-pitch cells): weighted
            # up, or the network learns to say "silence" everywhere first and stays there long
            F.binary_cross_entropy_with_logits(out["onset"], batch["onset"], pos_weight=ONSET_WEIGHT)
            + F.binary_cross_entropy_with_logits(out["frame"], batch["frame"], pos_weight=FRAME_WEIGHT)
            + 0.5 * F.binary_cross_entropy_with_logits(out["frame_families"], batch["families"])
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"pretrain: step {step}/{steps} loss {loss.item():.4f} "
                f"({(time.time() - t0) / step:.2f} s/step)")  # fmt: skip
    model.eval()
    if model.config.clip_families:
        _fit_clip_families(model, examples, seed, log)
    if model.config.note_families:
        _fit_note_families(model, examples, seed, log, iterations=family_batches)
    figures = {"steps": steps, "train_clips": len(examples), "val_clips": len(val_examples),
               "seconds": round(time.time() - t0, 1)}  # fmt: skip
    if val_examples:
        figures.update(evaluate_encoder(model, val_examples))
        log("pretrain: val " + ", ".join(f"{k} {v}" for k, v in figures.items() if k.startswith("val")))
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    import json

    (out_dir / "pretrain.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def _fit_clip_families(model, examples, seed: int, log, iterations: int = 500) -> None:
    """Fit the clip-level family head on every training clip at once (its statistics standardised
    by theirs): which families play in the clip, from the clip's statistics."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        stats = torch.cat([clip_statistics(torch.from_numpy(ex["cqt"])[None]) for ex in examples])
    target = torch.from_numpy(np.stack([ex["families"].max(0) for ex in examples]))
    model.clip_mean.copy_(stats.mean(0))
    model.clip_scale.copy_(stats.std(0) + 1e-3)
    torch.manual_seed(seed)
    params = list(model.clip_head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3)
    model.clip_head.train()
    for _ in range(iterations):
        loss = F.binary_cross_entropy_with_logits(model.clip_logits(stats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.clip_head.eval()
    log(f"pretrain: clip family head fitted on {len(examples)} clips (loss {loss.item():.4f})")


def _fit_note_families(model, examples, seed: int, log, iterations: int = 600,
                       batch_size: int = 8, max_frames: int = 256) -> None:
    """Fit the per-note family head on the trained network (its weights kept): at each frame and
    pitch where a note sounds, its voice's family, from the features and the harmonic stack
    there and in the two frames either side."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # half of each batch from clips of several families when there are any (ensembles, where
    # telling the voices' instruments apart matters; a solo clip's family the clip tells)
    ensembles = [ex for ex in examples if len(np.unique(ex["note_families"])) > 2]
    head = model.note_family_head
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    head.train()
    for _ in range(iterations):
        cqts, targets = [], []
        chosen = [examples[i] for i in rng.integers(0, len(examples), batch_size)]
        if ensembles:
            chosen[: batch_size // 2] = [ensembles[i] for i in rng.integers(0, len(ensembles), batch_size // 2)]
        n = min(max_frames, max(len(ex["cqt"]) for ex in chosen))
        for ex in chosen:
            t = len(ex["cqt"])
            a = int(rng.integers(0, t - n + 1)) if t > n else 0
            c, y = ex["cqt"][a : a + n], ex["note_families"][a : a + n]
            pad = ((0, n - len(c)), (0, 0))
            cqts.append(np.pad(c, pad)), targets.append(np.pad(y, pad))
        with torch.no_grad():  # the network stays as trained: only the head learns
            x, h = model.features(torch.from_numpy(np.stack(cqts)))
        out = head(torch.cat([x, h], 1))
        target = torch.from_numpy(np.stack(targets)).long() - 1  # -1: no note there
        loss = F.cross_entropy(out, target, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    log(f"pretrain: note family head fitted ({iterations} batches, loss {loss.item():.4f})")


def evaluate_encoder(model, examples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Val figures: note onset F1 (same pitch, within 2 frames = 40 ms), frame F1 and the share
    of sounding frames whose most likely family is one that plays."""
    import torch

    hits = n_ref = n_est = 0
    tp = fp = fn = 0
    fam_ok = fam_n = 0
    note_ok = note_n = 0
    with torch.inference_mode():
        for ex in examples:
            cqt = torch.from_numpy(ex["cqt"])[None]
            out = model(cqt)
            on = torch.sigmoid(out["onset"][0]).numpy()
            fr = torch.sigmoid(out["frame"][0]).numpy()
            h, r, e = onset_f1(frame_notes(ex["onset"], ex["frame"]), frame_notes(on, fr))
            hits, n_ref, n_est = hits + h, n_ref + r, n_est + e
            pred = fr >= 0.5
            tp += int((pred & (ex["frame"] > 0)).sum())
            fp += int((pred & (ex["frame"] == 0)).sum())
            fn += int((~pred & (ex["frame"] > 0)).sum())
            sounding = ex["families"].sum(1) > 0
            best = out["families"][0].argmax(-1).numpy()
            fam_ok += int(ex["families"][np.arange(len(best)), best][sounding].sum())
            fam_n += int(sounding.sum())
            if model.config.note_families and "note_families" in ex:
                playing = ex["note_families"] > 0
                guess = model.note_family_logits(cqt)[0].argmax(0).numpy() + 1  # [t, f]
                note_ok += int((guess == ex["note_families"])[playing].sum())
                note_n += int(playing.sum())
    f1 = 2 * hits / max(1, n_ref + n_est)
    figures = {
        "val_onset_f1": round(f1, 4),
        "val_frame_f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4),
        "val_family_accuracy": round(fam_ok / max(1, fam_n), 4),
    }
    if note_n:  # of the frames and pitches where a note sounds, the share given its family
        figures["val_note_family_accuracy"] = round(note_ok / note_n, 4)
    return figures


def _examples(records, cqt, log, what: str) -> list[dict[str, np.ndarray]]:
    out = []
    for rec in records:
        try:
            out.append(record_example(rec, cqt))
        except UserError as e:
            log(f"pretrain: skipping a {what} record: {e}")
    return out


def _batch(examples: list[dict[str, np.ndarray]], rng, max_frames: int = 256,
           tilt: float = 0.0) -> dict[str, Any]:
    """Stack examples cut (at a random start) or zero-padded to one length, with gain jitter
    and (``tilt`` > 0) a random spectral slope and smooth per-bin gain: another instrument's
    or soundfont's colour on the same notes."""
    import torch

    n = min(max_frames, max(len(ex["cqt"]) for ex in examples))
    out: dict[str, list] = {k: [] for k in examples[0]}
    for ex in examples:
        t = len(ex["cqt"])
        a = int(rng.integers(0, t - n + 1)) if t > n else 0
        for k, v in ex.items():
            piece = v[a : a + n]
            if k == "cqt":  # a louder or softer recording: the dB scale shifts
                gain = rng.uniform(-0.12, 0.12)
                if tilt > 0:
                    bins = np.linspace(-0.5, 0.5, v.shape[1], dtype=np.float32)
                    knots = rng.uniform(-tilt, tilt, 7)
                    eq = np.interp(np.linspace(0, 6, v.shape[1]), np.arange(7), knots)
                    gain = gain + rng.uniform(-tilt, tilt) * bins + 0.5 * eq.astype(np.float32)
                piece = np.clip(piece + gain, 0.0, 1.0)
            if len(piece) < n:
                piece = np.concatenate([piece, np.zeros((n - len(piece), v.shape[1]), v.dtype)])
            out[k].append(piece)
    return {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in out.items()}
