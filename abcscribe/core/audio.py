"""Audio in and out: load (mono, resampled, sliced), write (atomic), and render a Piece to audio
with FluidSynth and a General MIDI soundfont, or with the built-in synthesiser (core.synth)."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from abcscribe.core.errors import UserError
from abcscribe.core.notes import Piece

# Seconds rendered after the last note ends, so releases and decays are not cut off.
TAIL_SECONDS = 0.5

# Where Debian/Ubuntu and Fedora packages put General MIDI soundfonts, in order of preference
# (small first: TimGM6mb loads in milliseconds, FluidR3_GM is 140 MB).
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
)

ENGINES = ("auto", "fluidsynth", "builtin")

# The longest audio rendered unless asked for more (``render(max_seconds=...)``, render's
# --max-seconds): a megabyte line of ABC is days of audio, not a piece anyone meant to hear.
MAX_RENDER_SECONDS = 3600.0

# fluidsynth's MIDI player reads at most this many tracks and plays a file with more as
# silence; a MIDI file has 16 channels anyway, so voices beyond share tracks by channel.
FLUIDSYNTH_MAX_TRACKS = 128


# ---- loading ----------------------------------------------------------------------------------
def load_audio(
    path: str | Path | bytes,
    sr: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Mono float32 samples of ``path`` (wav/flac/ogg/mp3/...) from ``offset`` seconds for
    ``duration`` seconds (None: to the end), resampled to ``sr`` (None: the file's own rate).
    Returns (samples, rate). An unreadable, corrupt or empty file is a UserError naming it."""
    name = "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
    if offset < 0 or (duration is not None and duration <= 0):
        raise UserError(f"{name}: offset must be >= 0 and duration > 0")
    if not isinstance(path, (bytes, bytearray)) and not Path(path).is_file():
        raise UserError(f"{name}: no such audio file")
    try:
        audio, file_sr = _read_soundfile(path, offset, duration)
    except Exception as sf_err:  # libsndfile cannot read it: try librosa's decoders
        if isinstance(path, (bytes, bytearray)):
            raise UserError(f"{name}: cannot read audio ({_short(sf_err)})") from None
        try:
            audio, file_sr = _read_librosa(path, offset, duration)
        except Exception as e:
            raise UserError(f"{name}: cannot read audio ({_short(sf_err) or _short(e)})") from None
    if audio.size == 0:
        what = "no audio at that offset" if offset > 0 else "empty audio"
        raise UserError(f"{name}: {what}")
    if not np.all(np.isfinite(audio)):
        raise UserError(f"{name}: audio contains NaN or infinite samples")
    if sr is not None and sr != file_sr:
        audio = resample(audio, file_sr, sr)
        file_sr = sr
    return np.ascontiguousarray(audio, dtype=np.float32), int(file_sr)


def _short(e: Exception) -> str:
    import re

    s = str(e).strip().splitlines()
    return re.sub(r"^Error opening .*?: ", "", s[0]).rstrip(".") if s else type(e).__name__


def _read_soundfile(path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    src = io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else str(path)
    with sf.SoundFile(src) as f:
        rate = f.samplerate
        start = int(round(offset * rate))
        if start > 0:
            if start >= f.frames:
                return np.zeros(0, np.float32), rate
            f.seek(start)
        n = -1 if duration is None else int(round(duration * rate))
        data = f.read(frames=n, dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


# librosa's modules holding numba gufuncs, which numba compiles when they are imported and keeps
# in an on-disk cache (librosa's __pycache__, or NUMBA_CACHE_DIR): those every spectrogram needs
LIBROSA_NUMBA_MODULES = ("librosa.util.utils", "librosa.core.audio", "librosa.core.pitch")


def load_librosa(*more: str):
    """librosa, with its numba-compiled modules (and the named ``more``, e.g. ``librosa.beat``)
    imported by one abcscribe process on this machine at a time. Two processes filling numba's
    cache at once (the first run of ``torchrun --nproc-per-node 2``, ``make -j``) can store a
    gufunc and its wrapper from two different compilations, and every later process that loads
    the pair crashes (numba issue 10128); with the lock the second finds the first's cache.

    The first import also points librosa's own cache at :func:`librosa_cache_dir` (unless
    LIBROSA_CACHE_DIR is set): librosa then keeps the constant-Q filter bank it builds for every
    ``cqt`` call on disk instead of building it again, three fifths of a 2.5 s clip's CQT."""
    import sys

    if "librosa" not in sys.modules and "LIBROSA_CACHE_DIR" not in os.environ:
        cache = librosa_cache_dir()
        if cache is not None:
            os.environ["LIBROSA_CACHE_DIR"] = str(cache)
    import librosa

    wanted = [m for m in (*LIBROSA_NUMBA_MODULES, *more) if m not in sys.modules]
    if wanted:
        import importlib

        try:
            import fcntl

            lock = Path(tempfile.gettempdir()) / f"abcscribe-numba-{os.getuid()}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except (ImportError, OSError):  # no flock, or no writable temporary folder: unlocked
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            for name in wanted:
                importlib.import_module(name)
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock
    return librosa


def librosa_cache_dir() -> Path | None:
    """Where librosa caches the filter banks abcscribe's spectrograms use (level 10, under a
    megabyte): $XDG_CACHE_HOME/abcscribe/librosa, or ~/.cache/abcscribe/librosa; None when it
    cannot be made (librosa then builds them on every call, as it does by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(root) / "abcscribe" / "librosa"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _read_librosa(path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    import warnings

    librosa = load_librosa()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, rate = librosa.load(str(path), sr=None, mono=True, offset=offset, duration=duration)
    return y.astype(np.float32), int(rate)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr through librosa)."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    librosa = load_librosa()

    return librosa.resample(audio, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq").astype(
        np.float32
    )


# ---- writing ----------------------------------------------------------------------------------
def write_audio(path: str | Path, audio: np.ndarray, sr: int) -> None:
    """Write mono ``audio`` to ``path`` atomically; the format follows the suffix (.wav is 16-bit
    PCM, .flac 16-bit FLAC, .ogg Vorbis). Samples are clipped to [-1, 1]."""
    import soundfile as sf

    from abcscribe.core.files import atomic_path

    path = Path(path)
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
    if path.suffix.lower() not in fmt:
        raise UserError(f"{path}: unsupported audio suffix (use .wav, .flac or .ogg)")
    kind, subtype = fmt[path.suffix.lower()]
    data = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, int(sr), format=kind, subtype=subtype)


# ---- rendering --------------------------------------------------------------------------------
def render(
    piece: Piece, sr: int = 22050, engine: str = "auto", soundfont: str | None = None,
    max_seconds: float | None = MAX_RENDER_SECONDS, spread: float = 0.0, seed: int = 0,
) -> np.ndarray:
    """Render ``piece`` to mono float32 audio at ``sr``. ``engine``: ``fluidsynth`` (a GM
    soundfont via the fluidsynth program), ``builtin`` (core.synth), or ``auto`` (fluidsynth
    when the program and a soundfont are present, else builtin). The result lasts the piece
    plus TAIL_SECONDS, whatever the engine; a piece longer than ``max_seconds`` (None: no
    limit) is a UserError. ``spread``, ``seed``: the built-in synthesiser's timbres varied
    (core.synth.synthesize)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    check_sample_rate(sr)
    seconds = piece.duration_seconds
    if max_seconds is not None and seconds > max_seconds:
        raise UserError(f"the piece lasts {seconds:,.0f} s, more than the {max_seconds:,.0f} s "
                        "rendered at most (--max-seconds raises the limit)")
    if engine == "auto":
        engine = "fluidsynth" if fluidsynth_available(soundfont) else "builtin"
    if engine == "builtin":
        from abcscribe.core.synth import synthesize

        return synthesize(piece, sr, tail=TAIL_SECONDS, spread=spread, seed=seed)
    return render_fluidsynth(piece, sr, soundfont)


def check_sample_rate(sr: int) -> int:
    if sr < 4000 or sr > 192000:
        raise UserError(f"sample rate {sr} out of range (4000-192000)")
    return sr


def render_length(piece: Piece, sr: int) -> int:
    """Samples every engine renders for ``piece``: the piece plus TAIL_SECONDS."""
    return int(math.ceil((piece.duration_seconds + TAIL_SECONDS) * sr))


def find_soundfont(soundfont: str | None = None) -> str | None:
    """The soundfont to use: ``soundfont`` (UserError when missing), else the first system GM
    soundfont found, else None."""
    if soundfont:
        if not Path(soundfont).is_file():
            raise UserError(f"{soundfont}: no such soundfont")
        check_soundfont(soundfont)
        return str(soundfont)
    for p in SOUNDFONT_PATHS:
        if os.path.isfile(p):
            return p
    return None


def check_soundfont(path: str | Path) -> None:
    """A UserError unless ``path`` starts like a SoundFont (RIFF ``sfbk``: .sf2, .sf3):
    fluidsynth given anything else plays its default soundfont, or silence, and says nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as e:
        raise UserError(f"{path}: cannot read the soundfont ({e.strerror or e})") from None
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise UserError(f"{path}: not a SoundFont (.sf2/.sf3) file")


def fluidsynth_available(soundfont: str | None = None) -> bool:
    return shutil.which("fluidsynth") is not None and find_soundfont(soundfont) is not None


def render_fluidsynth(piece: Piece, sr: int = 22050, soundfont: str | None = None) -> np.ndarray:
    """Render through the ``fluidsynth`` program (no reverb or chorus, so rests stay silent)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise UserError("fluidsynth is not installed (apt install fluidsynth) or use --engine builtin")
    sf2 = find_soundfont(soundfont)
    if sf2 is None:
        raise UserError(
            "no General MIDI soundfont found (apt install timgm6mb-soundfont, or --soundfont)"
        )
    from abcscribe.core.midi import write_midi

    n = render_length(piece, sr)
    with tempfile.TemporaryDirectory(prefix="abcscribe-render-") as tmp:
        mid = Path(tmp) / "in.mid"
        wav = Path(tmp) / "out.wav"
        write_midi(_within_tracks(piece, FLUIDSYNTH_MAX_TRACKS - 1), mid)
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(sr),
               "-F", str(wav), "-T", "wav", sf2, str(mid)]  # fmt: skip
        from abcscribe.core.progress import meter

        # fluidsynth says nothing while it renders: the bar follows the WAV it writes (16-bit
        # stereo, 4 bytes a frame), for a long piece on a terminal
        with meter(n / sr, "fluidsynth", unit="s") as bar:
            done = [0.0]

            def watch() -> None:
                try:
                    size = wav.stat().st_size
                except OSError:  # not made yet
                    size = 0
                got = min(n, max(0, size - 44) // 4) / sr
                bar.update(got - done[0])
                done[0] = got

            code, err = _run_child(cmd, watch=watch)
        if code != 0 or not wav.exists():
            msg = err.strip().splitlines()
            raise UserError(f"fluidsynth failed: {msg[-1] if msg else code}")
        import soundfile as sf

        data, got_sr = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    if got_sr != sr:  # fluidsynth honours -r, but be safe
        audio = resample(audio, got_sr, sr)
    out = np.zeros(n, np.float32)
    out[: min(n, audio.size)] = audio[:n]
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0:  # the same loudness as the built-in engine
        from abcscribe.core.synth import PEAK

        out *= PEAK / peak
    return out


def _within_tracks(piece: Piece, most: int) -> Piece:
    """``piece`` with at most ``most`` voices: beyond that, the melodic voices that
    ``write_midi`` would put on one channel share one track (they share the channel's program
    and sound anyway), and the drum voices another."""
    if len(piece.voices) <= most:
        return piece
    import dataclasses

    from abcscribe.core.notes import Voice

    groups: dict[object, Voice] = {}
    k = 0
    for v in piece.voices:
        key = "drums" if v.drum else k % 15
        k += 0 if v.drum else 1
        g = groups.setdefault(key, Voice(program=v.program, name=v.name, drum=v.drum))
        g.notes.extend(v.notes)
    for g in groups.values():
        g.sort()
    return dataclasses.replace(piece, voices=list(groups.values()))


def _run_child(cmd: list[str], timeout: float = 3600.0, watch=None) -> tuple[int, str]:
    """Run ``cmd``; the child is killed when this process leaves the call in any way (an
    error, Ctrl-C, SIGTERM turned into an exit) and, where util-linux's ``setpriv`` is
    installed, when this process is killed outright (the parent-death signal). ``watch``:
    called about twice a second while the child runs (a progress bar)."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, err = proc.communicate(timeout=0.5 if watch else timeout)
                return proc.returncode, err.decode("utf-8", "replace")
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise
                watch()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_score(path: str | Path | None, data: bytes | None = None) -> Piece:
    """The Piece in a MIDI or ABC file (``data``: its bytes, e.g. from stdin), with raw MIDI
    timing (no quantization, no lead-in removed) so audio lines up with the file. For ABC, the
    first tune. A file that is neither is a UserError naming it."""
    name = str(path) if path is not None else "<stdin>"
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise UserError(f"{name}: cannot read ({e.strerror or e})") from None
    suffix = Path(path).suffix.lower() if path is not None else ""
    if data[:4] == b"MThd" or data[:4] == b"RIFF" or suffix in (".mid", ".midi", ".kar"):
        from abcscribe.core.midi import read_midi

        return read_midi(data if path is None else path, grid=None, offset=0.0)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if suffix == ".abc" or "\nK:" in "\n" + text:
        from abcscribe.core.abc import read_abc

        piece, _warnings = read_abc(text)
        return piece
    raise UserError(f"{name}: neither MIDI nor ABC")
