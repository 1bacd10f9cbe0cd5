"""core.audio, core.synth and core.encoders used as a library: load, write, render, encode, pool."""

import numpy as np
import pytest

from abcscribe.core.audio import load_audio, render, write_audio
from abcscribe.core.encoders import get_encoder, n_frames, pool
from abcscribe.core.errors import UserError
from abcscribe.core.notes import TPQ, Note, Piece, Tempo, Voice


def tone(freq, seconds, sr=16000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_write_then_load_resamples_and_slices(tmp_path):
    path = tmp_path / "a440.flac"
    write_audio(path, tone(440, 3.0, sr=22050), 22050)
    audio, sr = load_audio(path, sr=16000, offset=1.0, duration=1.5)
    assert sr == 16000 and audio.dtype == np.float32
    assert abs(audio.size - 24000) <= 1
    spec = np.abs(np.fft.rfft(audio))
    assert abs(np.fft.rfftfreq(audio.size, 1 / sr)[spec.argmax()] - 440) < 2


@pytest.mark.parametrize("content", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_unreadable_audio_is_a_user_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(UserError, match="broken.wav"):
        load_audio(path)


def test_offset_past_the_end_is_a_user_error(tmp_path):
    write_audio(tmp_path / "short.wav", tone(220, 0.5), 16000)
    with pytest.raises(UserError, match="short.wav"):
        load_audio(tmp_path / "short.wav", offset=2.0)


def melody(program=0):
    # 60 BPM: A4 for a beat, a beat's rest, E5 for a beat
    v = Voice([Note(69, 0, TPQ, 100), Note(76, 2 * TPQ, TPQ, 100)], program=program)
    return Piece([v], tempos=[Tempo(0, 60.0)])


def band_energy(audio, sr, t0, t1, f):
    seg = audio[int(t0 * sr) : int(t1 * sr)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size))) ** 2
    freqs = np.fft.rfftfreq(seg.size, 1 / sr)
    return spec[np.abs(freqs - f) < 15].sum() / spec.sum()


def test_builtin_render_sounds_the_notes_and_rests_in_silence():
    sr = 16000
    audio = render(melody(), sr, engine="builtin")
    assert audio.dtype == np.float32 and audio.size >= 3.0 * sr
    assert band_energy(audio, sr, 0.1, 0.9, 440.0) > 0.3
    assert band_energy(audio, sr, 2.1, 2.9, 659.26) > 0.3
    assert np.sqrt(np.mean(audio[int(1.3 * sr) : int(1.9 * sr)] ** 2)) < 1e-4
    assert np.array_equal(audio, render(melody(), sr, engine="builtin"))  # deterministic


def test_builtin_families_are_spectrally_distinct():
    # the same note on a piano, a clarinet and a flute: different harmonic profiles
    sr = 16000
    profiles = []
    for program in (0, 71, 73):
        a = render(melody(program), sr, engine="builtin")[int(0.2 * sr) : int(0.8 * sr)]
        spec = np.abs(np.fft.rfft(a))
        freqs = np.fft.rfftfreq(a.size, 1 / sr)
        h = np.array([spec[np.abs(freqs - 440 * k) < 10].max() for k in range(1, 7)])
        profiles.append(h / h.sum())
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(profiles[i] - profiles[j]).sum() > 0.2


def test_render_follows_tempo_changes():
    # a tempo change to 120 BPM at beat 2 puts the note at beat 3 at 2.5 s
    v = Voice([Note(69, 0, TPQ // 2, 100), Note(69, 3 * TPQ, TPQ // 2, 100)])
    p = Piece([v], tempos=[Tempo(0, 60.0), Tempo(2 * TPQ, 120.0)])
    audio = render(p, 16000, engine="builtin")
    env = np.abs(audio)
    onset = np.flatnonzero(env[int(1.0 * 16000) :] > 0.05)[0] / 16000 + 1.0
    assert abs(onset - 2.5) < 0.01


def test_cqt_encoder_puts_a_note_in_its_bin():
    enc = get_encoder("cqt")
    assert (enc.sample_rate, enc.frame_rate, enc.dim) == (16000, 50.0, 72)
    emb = enc.encode(tone(440.0, 2.0))
    assert emb.shape == (100, 72)
    assert 0.0 <= emb.min() and emb.max() <= 1.0
    # A4 is 33 semitones above C2
    assert np.bincount(emb[10:90].argmax(axis=1)).argmax() == 33


def test_mel_and_crepe_tiny_shapes_follow_the_frame_convention():
    audio = tone(330.0, 1.37)
    for name, dim in (("mel", 128), ("crepe-tiny", 256)):
        enc = get_encoder(name)
        emb = enc.encode(audio)
        assert emb.shape == (n_frames(audio.size, 16000, enc.frame_rate), dim)
        assert emb.dtype == np.float32 and np.isfinite(emb).all()


def test_crepe_tiny_tells_pitches_apart():
    enc = get_encoder("crepe-tiny")
    a, b, a2 = (enc.encode(tone(f, 0.5)).mean(axis=0) for f in (220.0, 523.25, 220.0))
    assert np.allclose(a, a2)
    assert np.linalg.norm(a - b) > 0.1 * np.linalg.norm(a)


def test_pooling_is_exact():
    emb = np.arange(500, dtype=np.float32)[:, None].repeat(3, axis=1)  # 10.0 s at 50 Hz
    pooled, rate = pool(emb, 50.0, 100.0)
    assert pooled.shape == (100, 3) and rate == 10.0
    assert pooled[0, 0] == np.mean(np.arange(5)) and pooled[-1, 0] == np.mean(np.arange(495, 500))
    # a partial last window averages what is there
    longer = np.arange(503, dtype=np.float32)[:, None]
    pooled, _ = pool(longer, 50.0, 100.0)
    assert pooled.shape == (101, 1) and pooled[-1, 0] == np.mean([500, 501, 502])
    assert pool(emb, 50.0, 0)[0] is emb
    with pytest.raises(UserError):
        pool(emb, 50.0, 5.0)


def test_unknown_encoder_and_layer_on_features_are_user_errors():
    with pytest.raises(UserError, match="unknown encoder"):
        get_encoder("jukebox")
    with pytest.raises(UserError, match="--layer"):
        get_encoder("cqt", layer=3)


def test_crepe_embeddings_are_what_its_classifier_sees():
    # the fast path must give the activations torchcrepe's own forward feeds its classifier
    import torch

    enc = get_encoder("crepe-tiny")
    seen = []
    hook = enc.model.classifier.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    frames = torch.from_numpy(np.random.default_rng(0).standard_normal((20, 1024)).astype("f4"))
    with torch.inference_mode():
        enc.model(frames)
        fast = enc.penultimate(frames)
    hook.remove()
    assert fast.shape == (20, 256)
    torch.testing.assert_close(fast, seen[0], atol=1e-4, rtol=1e-4)


BEAT_SCRIPT = """
import numpy as np
from abcscribe.core.baseline import track_beats
clicks = np.zeros(22050 * 4, dtype=np.float32)
clicks[::11025] = 1.0  # 120 BPM
print(len(track_beats(clicks, 22050).times))
"""


@pytest.mark.slow
def test_processes_started_together_share_librosas_numba_cache_safely(tmp_path):
    """Two abcscribe processes on a cold numba cache (the first ``torchrun --nproc-per-node 2``,
    ``make -j``): both beat-track, and so does a third that loads what they cached."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", BEAT_SCRIPT]
    together = [subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]  # fmt: skip
    results = []
    for p in together:
        out, err = p.communicate(timeout=600)
        results.append((p.returncode, out, err))
    later = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    results.append((later.returncode, later.stdout, later.stderr))
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert int(out) >= 6  # eight clicks, a beat on (nearly) each
