"""abcscribe embed and hf: encoders: tiny Whisper and wav2vec2 models built from configs, saved,
and loaded back through hf:<dir> the way a user points at a downloaded model."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from abcscribe.core.audio import load_audio, write_audio
from abcscribe.core.encoders import get_encoder
from abcscribe.core.errors import UserError
from conftest import write_jsonl

SR = 16000


def embed(capsys, *args):
    """Run ``abcscribe embed ARGS`` in this process (the models are already imported here, which
    keeps the test fast); returns (exit status, stdout, stderr)."""
    from abcscribe.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["embed", *map(str, args)])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                              WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    # Whisper with a 2-second window (its feature extractor pads every input to it)
    whisper = WhisperConfig(
        vocab_size=64, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
        num_mel_bins=80, d_model=16, encoder_layers=2, encoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
        max_source_positions=100, max_target_positions=16)
    WhisperModel(whisper).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(root / "whisper")
    w2v = Wav2Vec2Config(
        vocab_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(w2v).save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(root / "w2v")
    return {"whisper": f"hf:{root / 'whisper'}", "w2v": f"hf:{root / 'w2v'}"}


def chirp(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = 220 * 2 ** (t / seconds)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


def test_whisper_encoder_windows_long_audio_with_exact_frame_times(models):
    enc = get_encoder(models["whisper"])
    assert (enc.sample_rate, enc.frame_rate, enc.window_seconds, enc.dim) == (SR, 50.0, 2.0, 16)
    audio = chirp(5.0)  # 2.5 windows
    emb = enc.encode(audio)
    assert emb.shape == (250, 16)
    # window 3 (4.0 s to the end) is the same as encoding that second on its own
    np.testing.assert_allclose(emb[200:], enc.encode(audio[4 * SR :]), atol=1e-5)
    np.testing.assert_allclose(emb[100:200], enc.encode(audio[2 * SR : 4 * SR]), atol=1e-5)


@pytest.mark.parametrize("which,n_layers", [("whisper", 2), ("w2v", 3)])
def test_chosen_layer_differs_from_the_last(models, which, n_layers):
    audio = chirp(1.0)
    last = get_encoder(models[which]).encode(audio)
    first = get_encoder(models[which], layer=1).encode(audio)
    assert first.shape == last.shape
    assert np.abs(first - last).max() > 1e-3
    np.testing.assert_allclose(get_encoder(models[which], layer=n_layers).encode(audio), last,
                               atol=1e-5)
    with pytest.raises(UserError, match="--layer"):
        get_encoder(models[which], layer=n_layers + 1)


def test_wav2vec2_frame_rate_comes_from_its_convolutions(models):
    enc = get_encoder(models["w2v"])
    assert enc.frame_rate == 50.0 and enc.dim == 16
    assert enc.encode(chirp(3.3)).shape == (165, 16)


def test_a_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load"):
        get_encoder(f"hf:{tmp_path / 'no-model'}")


def read(path):
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("embeddings"), f.metadata()


def test_embed_llark_recipe_pools_to_10_hz(tmp_path, capsys, models):
    write_audio(tmp_path / "ten.wav", chirp(10.0), SR)
    code, out, err = embed(capsys, tmp_path / "ten.wav", "-o", tmp_path / "emb", "--encoder",
                           models["w2v"], "--layer", "2", "--pool-ms", "100")
    assert code == 0, err
    rec = json.loads(out)
    emb, meta = read(rec["embedding"])
    assert emb.shape == (100, 16) and rec["frames"] == 100
    assert meta["encoder"] == models["w2v"] and meta["layer"] == "2"
    assert float(meta["frame_rate"]) == 10.0 and int(meta["sample_rate"]) == SR
    assert float(meta["duration"]) == 10.0 and float(meta["offset"]) == 0.0
    assert meta["source"].endswith("ten.wav")
    # each pooled frame is the mean of five native frames
    native = get_encoder(models["w2v"], layer=2).encode(load_audio(tmp_path / "ten.wav")[0])
    np.testing.assert_allclose(emb[7], native[35:40].mean(axis=0), atol=1e-5)


def test_embed_jsonl_passes_records_through_and_keeps_going_after_bad_audio(tmp_path, capsys,
                                                                            models):
    write_audio(tmp_path / "clip.wav", chirp(5.0), SR)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt nothing")
    recs = [
        {"id": "q1", "audio": "clip.wav", "offset": 1.0, "duration": 3.0, "task": "tempo"},
        {"id": "q2", "audio": "bad.wav", "offset": 0.0, "duration": 1.0},
        {"id": "q3", "audio": "clip.wav", "offset": 1.0, "duration": 3.0, "task": "key"},
    ]
    write_jsonl(tmp_path / "qa.jsonl", recs)
    code, stdout, err = embed(capsys, tmp_path / "qa.jsonl", "-o", tmp_path / "emb",
                              "--encoder", models["whisper"])
    assert code == 1 and "Traceback" not in err
    out = [json.loads(line) for line in stdout.splitlines()]
    assert [r["id"] for r in out] == ["q1", "q2", "q3"]
    assert out[0]["task"] == "tempo" and out[2]["task"] == "key"
    assert "bad.wav" in out[1]["error"]
    assert out[0]["embedding"] == out[2]["embedding"]  # one clip, one file
    emb, meta = read(out[0]["embedding"])
    assert emb.shape == (150, 16) and float(meta["offset"]) == 1.0
    assert float(meta["duration"]) == 3.0


def test_embed_skips_done_outputs_unless_overwrite(tmp_path, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_audio(tmp_path / "in" / "sub" / "a.wav", chirp(1.0), SR)
    args = [tmp_path / "in", "-o", tmp_path / "emb"]
    first = json.loads(embed(capsys, *args)[1])
    assert first["embedding"].endswith("sub/a.safetensors") and "skipped" not in first
    assert first["frames"] == 50 and first["dim"] == 72
    assert json.loads(embed(capsys, *args)[1])["skipped"] is True
    assert "skipped" not in json.loads(embed(capsys, *args, "--overwrite")[1])


def test_embed_option_mistakes_are_one_line_errors(tmp_path, cli):
    write_audio(tmp_path / "a.wav", chirp(0.5), SR)
    for extra in (["--encoder", "jukebox"], ["--layer", "3"], ["--pool-ms", "-5"],
                  ["--device", "tpu"], ["--dtype", "int3"]):
        p = cli("embed", tmp_path / "a.wav", "-o", tmp_path / "e", *extra)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (extra, p.stderr)


def test_cqt_filter_bank_is_kept_in_the_user_cache_and_features_are_unchanged(tmp_path):
    """librosa keeps the CQT filter bank it builds in ~/.cache/abcscribe/librosa (XDG_CACHE_HOME
    respected); the frames are exactly those of librosa building it every call, and a cache
    folder that cannot be made only means no cache."""
    import os
    import subprocess
    import sys

    from safetensors.numpy import load_file

    write_audio(tmp_path / "a.wav", chirp(2.5), SR)
    (tmp_path / "file").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBROSA_CACHE")}
    frames = {}
    for name, extra in (("kept", {"XDG_CACHE_HOME": str(tmp_path / "cache")}),
                        ("built", {"LIBROSA_CACHE_LEVEL": "0"}),
                        ("no cache folder", {"XDG_CACHE_HOME": str(tmp_path / "file")})):
        p = subprocess.run([sys.executable, "-m", "abcscribe", "embed", tmp_path / "a.wav",
                            "-o", tmp_path / name, "--encoder", "cqt", "--pool-ms", "0"],
                           env={**env, **extra}, capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["frames"] == 125
        frames[name] = load_file(tmp_path / name / "a.safetensors")
    kept = list((tmp_path / "cache" / "abcscribe" / "librosa").rglob("output.pkl"))
    assert kept, "no filter bank kept"
    for name in ("built", "no cache folder"):
        assert frames[name].keys() == frames["kept"].keys()
        for k in frames["kept"]:
            np.testing.assert_array_equal(frames[name][k], frames["kept"][k])
