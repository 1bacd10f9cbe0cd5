"""One catalogue of bad inputs that every command is run against, as a user would type them.

Each case is a command line over small files made by ``make_inputs`` and says what must happen:
the exit status (2: a one-line error before any work; 1: an error record and the batch went on;
0), and, where output could be lost, a check that it was not. Every case must also finish
without a Python traceback and within its time limit.

Run it as a report (a line per case, then totals of tracebacks, hangs, losses, wrong statuses):

    PYTHONPATH=. python tests/bad_inputs.py [NAME-SUBSTRING ...]

``tests/test_bad_inputs.py`` runs the same cases under pytest."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TUNE = "X:1\nT:t\nM:4/4\nL:1/8\nQ:1/4=120\nK:C\nCDEF GABc|\n"
QUESTION = "Transcribe this audio into ABC notation."


@dataclass
class Case:
    """A command line (``{name}`` fields are paths under the inputs folder), the exit statuses
    that are right for it, and a check returning what was lost (None: nothing)."""

    name: str
    argv: list[str]
    status: tuple[int, ...]
    stdin: bytes | None = None
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None
    timeout: float = 120.0
    umask: int | None = None
    closed_stdout: bool = False  # stdout a pipe whose reader has gone (`| head -1`)
    heavy: bool = False  # loads torch/transformers: the pytest run keeps these few
    setup: Callable[[Path], None] | None = None  # makes this case's own files (under tmp)


@dataclass
class Outcome:
    case: Case
    status: int | None
    stderr: str
    stdout: str
    seconds: float
    traceback: bool = False
    hang: bool = False
    lost: str | None = None
    wrong_status: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.traceback or self.hang or self.lost or self.wrong_status)


# ---- the inputs ----------------------------------------------------------------------------
def _midi(path: Path, notes: int = 4) -> Path:
    import mido

    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    for i in range(notes):
        tr.append(mido.Message("note_on", note=60 + i, velocity=80, time=0))
        tr.append(mido.Message("note_off", note=60 + i, velocity=0, time=480))
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.save(path)
    return path


def _absurd_midi(path: Path) -> Path:
    """37 bytes: ticks_per_beat 1 and one delta of 0x0FFFFFFF before a note."""
    track = (b"\x00\x90\x3c\x40" + b"\xff\xff\xff\x7f\x80\x3c\x40" + b"\x00\xff\x2f\x00")
    data = (b"MThd" + (6).to_bytes(4, "big") + b"\x00\x00\x00\x01\x00\x01"
            + b"MTrk" + len(track).to_bytes(4, "big") + track)
    path.write_bytes(data)
    return path


def _wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), sr)
    return path


def _record(path: Path, **kw) -> dict:
    audio = path
    abc = kw.pop("abc", TUNE)
    rec = {"id": audio.stem, "piece": audio.stem, "split": "train", "audio": str(audio),
           "offset": 0.0, "duration": 1.0, "task": "transcribe", "abc": abc,
           "messages": [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": QUESTION}]},
                        {"role": "assistant", "content": abc}]}
    rec.update(kw)
    return rec


def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def make_inputs(root: Path, model: bool = True) -> Path:
    """Every file the cases name, under ``root``. With ``model``, also a tiny saved model
    (``model/``) and corrupt copies of it (needs torch and transformers)."""
    root.mkdir(parents=True, exist_ok=True)
    _midi(root / "x.mid")
    _midi(root / "y.mid")
    _midi(root / "A" / "x.mid")
    _midi(root / "B" / "x.mid")
    _absurd_midi(root / "absurd.mid")
    (root / "empty").mkdir(exist_ok=True)
    (root / "t.abc").write_text(TUNE)
    (root / "same").mkdir(exist_ok=True)
    _midi(root / "same" / "x.mid")
    (root / "same" / "x.abc").write_text(TUNE)
    # 128+ voices: one note each
    voices = "".join(f"V:{i}\n{'CDEFGAB'[i % 7]}8|\n" for i in range(1, 131))
    (root / "voices130.abc").write_text("X:1\nT:v\nM:4/4\nL:1/8\nQ:1/4=120\nK:C\n" + voices)
    # one line of music a megabyte long: days of audio
    (root / "huge.abc").write_text("X:1\nT:h\nM:4/4\nL:1/8\nK:C\n" + "C8|" * 300_000 + "\n")
    (root / "garbage.sf2").write_bytes(b"this is not a soundfont\n" * 100)
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "afile").write_text("a regular file\n")
    (root / "outdir").mkdir(exist_ok=True)

    _wav(root / "a.wav")
    _wav(root / "b.wav")
    _wav(root / "two" / "x.wav")
    _wav(root / "two" / "x.flac")
    _wav(root / "pair" / "p.wav", seconds=2.0)  # a recording and its score: what mkqa pairs
    _midi(root / "pair" / "p.mid")
    good = [_record(root / "a.wav"), _record(root / "b.wav", id="b", piece="b")]
    _jsonl(root / "good.jsonl", good)
    _jsonl(root / "malformed.jsonl", [good[0], '{"id": "broken", "audio": ', good[1]])
    (root / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\x80\x81\n" + bytes(range(128, 256)) + b"\n")
    _jsonl(root / "types.jsonl", [_record(root / "a.wav", id="audio42", audio=42),
                                  _record(root / "a.wav", id="offabc", offset="abc"),
                                  _record(root / "b.wav", id="msgx", messages="x"),
                                  good[1]])
    _jsonl(root / "manifest.jsonl", [{"audio": str(root / "a.wav"), "midi": str(root / "x.mid")},
                                     '{"audio": oops',
                                     {"audio": str(root / "b.wav"), "midi": str(root / "y.mid")}])
    (root / "manifest-binary.jsonl").write_bytes((root / "binary.jsonl").read_bytes())
    _jsonl(root / "pairs.jsonl", [{"id": i, "ref": TUNE, "pred": TUNE} for i in range(50)])
    if model:
        _model(root)
    return root


def _model(root: Path) -> None:
    """model/: a tiny composed model saved as sft saves it; corrupt copies beside it."""
    import shutil

    from abcscribe.core.models import build_tiny

    recs = [_record(root / "a.wav"), _record(root / "b.wav", id="b")]
    lm = build_tiny(recs, hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                    num_attention_heads=2, num_key_value_heads=1, stack=4)
    lm.save(root / "model")
    weights = next((root / "model").glob("*.safetensors"))
    for name, spoil in (
        ("truncated", lambda d: _truncate(d / weights.name)),
        ("zero", lambda d: (d / weights.name).write_bytes(b"")),
        ("config", lambda d: (d / "config.json").write_text("{not json")),
        ("meta", lambda d: (d / "abcscribe.json").write_text("{\"family\": ")),
    ):
        d = root / f"model-{name}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(root / "model", d)
        spoil(d)


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


# ---- checks ---------------------------------------------------------------------------------
def exists(*rels: str):
    def check(root: Path, proc) -> str | None:
        missing = [r for r in rels if not (root / "out" / r).is_file()]
        return f"missing output {', '.join(missing)}" if missing else None

    return check


def records_for(*ids: str):
    """stdout has a record naming each of ``ids`` (in its id, path, input or audio field)."""

    def check(root: Path, proc) -> str | None:
        recs = []
        for line in proc.stdout.splitlines():
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
        text = [json.dumps(r) for r in recs]
        missing = [i for i in ids if not any(i in t for t in text)]
        return f"no record for {', '.join(missing)}" if missing else None

    return check


def all_of(*checks):
    def check(root, proc):
        for c in checks:
            lost = c(root, proc)
            if lost:
                return lost
        return None

    return check


def mode_644(rel: str):
    def check(root: Path, proc) -> str | None:
        p = root / "out" / rel
        if not p.is_file():
            return f"missing output {rel}"
        mode = stat.S_IMODE(p.stat().st_mode)
        return None if mode == 0o644 else f"{rel} has mode {oct(mode)} under umask 022"

    return check


def not_silent(rel: str):
    def check(root: Path, proc) -> str | None:
        import soundfile as sf

        p = root / "out" / rel
        if not p.is_file():
            return None  # refused: nothing written, nothing lost
        data, _ = sf.read(str(p))
        return None if abs(data).max() > 1e-3 else f"{rel} is silent"

    return check


def said_nothing_to_do(root: Path, proc) -> str | None:
    return None if proc.stderr.strip() else "nothing said on stderr"


def no_stray_tmp(root: Path, proc) -> str | None:
    left = [p.name for p in (root / "out").rglob("*.tmp")] if (root / "out").exists() else []
    return f"temporary files left: {left}" if left else None


def jsonl_records_for(rel: str, *ids: str):
    """The JSONL file ``out/rel`` has a record naming each of ``ids``."""

    def check(root: Path, proc) -> str | None:
        p = root / "out" / rel
        if not p.is_file():
            return f"missing output {rel}"
        return records_for(*ids)(root, subprocess.CompletedProcess([], 0, p.read_text(), ""))

    return check


def _dir_at_output(root: Path) -> None:
    (root / "out" / "x.abc").mkdir(parents=True, exist_ok=True)


def _torn_checkpoint(root: Path) -> None:
    ck = root / "torn" / "checkpoint-2"
    ck.mkdir(parents=True, exist_ok=True)
    (ck / "optimizer.pt").write_bytes(b"PK\x03\x04partial")
    (ck / "model.safetensors").write_bytes(b"")


# ---- the catalogue --------------------------------------------------------------------------
S = sys.executable


def _missing(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is None


def cases() -> list[Case]:
    C = Case
    return [
        # midi2abc
        C("midi2abc: one missing path among several", ["midi2abc", "{x.mid}", "{nope.mid}", "{y.mid}", "-o", "{out}"], (1,),
          check=exists("x.abc", "y.abc")),
        C("midi2abc: two inputs with one output name", ["midi2abc", "{A/x.mid}", "{B/x.mid}", "-o", "{out}"], (2,)),
        C("midi2abc: a directory at the output name", ["midi2abc", "{x.mid}", "-o", "{out}"], (1,),
          setup=_dir_at_output, check=records_for()),
        C("midi2abc: absurd delta (37 bytes, 0x0FFFFFFF ticks)", ["midi2abc", "{absurd.mid}"], (1,), timeout=60),
        C("midi2abc: an empty folder", ["midi2abc", "{empty}"], (2,), check=said_nothing_to_do),
        C("midi2abc: empty stdin", ["midi2abc", "-"], (1, 2), stdin=b"", check=said_nothing_to_do),
        C("midi2abc: not MIDI", ["midi2abc", "{binary.bin}"], (1,)),
        C("midi2abc: | head -1", ["midi2abc", "{x.mid}", "{y.mid}"], (0,), closed_stdout=True),
        C("midi2abc: -o honours the umask", ["midi2abc", "{x.mid}", "-o", "{out}"], (0,), umask=0o022,
          check=all_of(mode_644("x.abc"), no_stray_tmp)),
        C("midi2abc: -o under a regular file", ["midi2abc", "{x.mid}", "-o", "{afile}/sub"], (2,)),
        C("midi2abc: --bars-per-line 0", ["midi2abc", "{x.mid}", "--bars-per-line", "0"], (2,)),
        C("midi2abc: --layout bogus", ["midi2abc", "{x.mid}", "--layout", "bogus"], (2,)),
        C("midi2abc: --jobs -3", ["midi2abc", "{x.mid}", "--jobs", "-3"], (2,)),
        # abc2midi
        C("abc2midi: -o a directory", ["abc2midi", "{t.abc}", "-o", "{outdir}"], (2,)),
        C("abc2midi: -o under a regular file", ["abc2midi", "{t.abc}", "-o", "{afile}/t.mid"], (2,)),
        C("abc2midi: binary input", ["abc2midi", "{binary.bin}", "-o", "{out}/b.mid"], (2,)),
        C("abc2midi: missing input", ["abc2midi", "{nope.abc}"], (2,)),
        C("abc2midi: empty stdin", ["abc2midi", "-", "-o", "{out}/e.mid"], (2,), stdin=b""),
        C("abc2midi: --format pdf", ["abc2midi", "{t.abc}", "-o", "{out}/t.mid", "--format", "pdf"], (2,)),
        C("abc2midi: --tune -1", ["abc2midi", "{t.abc}", "-o", "{out}/t.mid", "--tune", "-1"], (2,)),
        C("abc2midi: honours the umask", ["abc2midi", "{t.abc}", "-o", "{out}/t.mid"], (0,), umask=0o022,
          check=mode_644("t.mid")),
        # render
        C("render: x.mid and x.abc to one x.wav", ["render", "{same/x.mid}", "{same/x.abc}", "-o", "{out}", "--engine", "builtin"], (2,)),
        C("render: two inputs with one output name", ["render", "{A/x.mid}", "{B/x.mid}", "-o", "{out}", "--engine", "builtin"], (2,)),
        C("render: a garbage --soundfont", ["render", "{x.mid}", "-o", "{out}", "--soundfont", "{garbage.sf2}"], (2,)),
        C("render: a megabyte line of ABC", ["render", "{huge.abc}", "-o", "{out}", "--engine", "builtin"], (1, 2), timeout=60),
        C("render: 130 voices (fluidsynth)", ["render", "{voices130.abc}", "-o", "{out}", "--engine", "fluidsynth"], (0, 1, 2),
          check=not_silent("voices130.wav"), timeout=120),
        C("render: one missing path among several", ["render", "{x.mid}", "{nope.mid}", "-o", "{out}", "--engine", "builtin"], (1,),
          check=exists("x.wav")),
        C("render: an empty folder", ["render", "{empty}"], (2,), check=said_nothing_to_do),
        C("render: | head -1", ["render", "{x.mid}", "{y.mid}", "-o", "{out}", "--engine", "builtin"], (0,), closed_stdout=True),
        C("render: honours the umask", ["render", "{x.mid}", "-o", "{out}", "--engine", "builtin"], (0,), umask=0o022,
          check=all_of(mode_644("x.wav"), no_stray_tmp)),
        C("render: --max-seconds -1", ["render", "{x.mid}", "-o", "{out}", "--max-seconds", "-1"], (2,)),
        C("render: --format mp3", ["render", "{x.mid}", "-o", "{out}", "--format", "mp3"], (2,)),
        C("render: --engine timidity", ["render", "{x.mid}", "-o", "{out}", "--engine", "timidity"], (2,)),
        C("render: --sample-rate 0", ["render", "{x.mid}", "-o", "{out}", "--sample-rate", "0"], (2,)),
        # embed
        C("embed: one malformed JSONL line", ["embed", "{malformed.jsonl}", "-o", "{out}"], (1,),
          check=records_for("a.wav", "b.wav")),
        C("embed: binary JSONL", ["embed", "{binary.jsonl}", "-o", "{out}"], (1, 2)),
        C("embed: wrong field types", ["embed", "{types.jsonl}", "-o", "{out}"], (1,), check=records_for("b.wav")),
        C("embed: x.wav and x.flac to one name", ["embed", "{two}", "-o", "{out}"], (2,)),
        C("embed: --device cuda without CUDA", ["embed", "{a.wav}", "-o", "{out}", "--device", "cuda"], (2,)),
        C("embed: --device tpu", ["embed", "{a.wav}", "-o", "{out}", "--device", "tpu"], (2,)),
        C("embed: empty stdin", ["embed", "-", "-o", "{out}"], (2,), stdin=b"", check=said_nothing_to_do),
        C("embed: one missing path among several", ["embed", "{a.wav}", "{nope.wav}", "-o", "{out}"], (1,),
          check=exists("a.safetensors")),
        # mkqa
        C("mkqa: -o a directory", ["mkqa", "{x.mid}", "-o", "{outdir}"], (2,)),
        C("mkqa: --out-dir a regular file", ["mkqa", "{x.mid}", "--out-dir", "{afile}"], (2,)),
        C("mkqa: a binary manifest", ["mkqa", "{manifest-binary.jsonl}", "--layout", "manifest"], (1, 2)),
        C("mkqa: a malformed manifest line", ["mkqa", "{manifest.jsonl}", "--layout", "manifest"], (1,),
          check=records_for("a.wav", "b.wav")),
        C("mkqa: an empty folder", ["mkqa", "{empty}"], (2,), check=said_nothing_to_do),
        C("mkqa: | head -1", ["mkqa", "{manifest.jsonl}", "--layout", "manifest"], (0, 1), closed_stdout=True),
        C("mkqa: one missing path among several", ["mkqa", "{pair}", "{nope}", "-o", "{out}/qa.jsonl", "--engine", "builtin"], (1,),
          check=jsonl_records_for("qa.jsonl", "p.wav", "nope")),
        C("mkqa: one missing path among several, records on stdout", ["mkqa", "{nope}", "{pair}"], (1,),
          check=records_for("p.wav", "nope")),
        C("mkqa: --grid -1", ["mkqa", "{pair}", "--grid", "-1"], (2,)),
        C("mkqa: --jobs -1", ["mkqa", "{pair}", "--jobs", "-1"], (2,)),
        C("mkqa: --layout bogus", ["mkqa", "{pair}", "--layout", "bogus"], (2,)),
        C("mkqa: --sample-rate 0", ["mkqa", "{pair}", "--render", "--audio-dir", "{out}/a", "--sample-rate", "0"], (2,)),
        C("mkqa: --max-seconds -1", ["mkqa", "{x.mid}", "--max-seconds", "-1"], (2,)),
        # score
        C("score: --resamples 1000000000", ["score", "--summary", "--resamples", "1000000000"], (2,),
          stdin=json.dumps({"ref": TUNE, "pred": TUNE}).encode() + b"\n", timeout=60),
        C("score: binary stdin", ["score"], (1, 2), stdin=bytes(range(256)) * 4),
        C("score: empty stdin", ["score"], (2,), stdin=b"", check=said_nothing_to_do),
        C("score: | head -1", ["score"], (0,), stdin=None, closed_stdout=True),
        C("score: --resamples -1", ["score", "--summary", "--resamples", "-1"], (2,),
          stdin=json.dumps({"ref": TUNE, "pred": TUNE}).encode() + b"\n"),
        C("score: --weights garbage", ["score", "--weights", "pitch=x"], (2,), stdin=b""),
        # sft
        C("sft: --lr -1", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--lr", "-1"], (2,)),
        C("sft: --lr nan", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--lr", "nan"], (2,)),
        C("sft: --epochs -1", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--epochs", "-1"], (2,)),
        C("sft: -o an existing file", ["sft", "--data", "{good.jsonl}", "-o", "{afile}", "--max-steps", "0"], (2,)),
        C("sft: binary --data", ["sft", "--data", "{binary.jsonl}", "-o", "{out}/s", "--max-steps", "0"], (2,), heavy=True),
        C("sft: binary --eval-data", ["sft", "--data", "{good.jsonl}", "--eval-data", "{binary.jsonl}", "-o", "{out}/s", "--max-steps", "0"], (2,), heavy=True),
        C("sft: a malformed line among good ones", ["sft", "--data", "{malformed.jsonl}", "-o", "{out}/s", "--max-steps", "0"], (0,),
          check=lambda root, p: None if (root / "out" / "s" / "abcscribe.json").is_file() else "no model written", heavy=True),
        C("sft: wrong field types", ["sft", "--data", "{types.jsonl}", "-o", "{out}/s", "--max-steps", "0"], (0,), heavy=True),
        C("sft: a corrupt --model", ["sft", "--data", "{good.jsonl}", "--model", "{model-truncated}", "-o", "{out}/s", "--max-steps", "0"], (2,), heavy=True),
        C("sft: --resume over a torn checkpoint", ["sft", "--data", "{good.jsonl}", "-o", "{torn}", "--resume", "--max-steps", "0"], (0,),
          setup=_torn_checkpoint, heavy=True,
          check=lambda root, p: None if "incomplete checkpoint" in p.stderr else "the torn checkpoint was not named"),
        C("sft: --device tpu", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--device", "tpu"], (2,)),
        C("sft: --device cuda without CUDA", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--device", "cuda", "--max-steps", "0"], (2,),
          check=lambda root, p: "the model was written" if (root / "out" / "s" / "abcscribe.json").exists() else None),
        C("sft: --report-to tensorboard, not installed", ["sft", "--data", "{good.jsonl}", "-o", "{out}/s", "--report-to", "tensorboard", "--max-steps", "0"],
          (2,) if _missing("tensorboard") else (0,)),
        # pretrain
        C("pretrain: --steps 0", ["pretrain", "--data", "{good.jsonl}", "-o", "{out}/e", "--steps", "0"], (2,)),
        C("pretrain: --lr nan", ["pretrain", "--data", "{good.jsonl}", "-o", "{out}/e", "--lr", "nan"], (2,)),
        C("pretrain: missing --data", ["pretrain", "--data", "{nope.jsonl}", "-o", "{out}/e"], (2,)),
        C("pretrain: -o an existing file", ["pretrain", "--data", "{good.jsonl}", "-o", "{afile}"], (2,)),
        # ppo
        C("ppo: --device tpu", ["ppo", "--data", "{good.jsonl}", "--model", "{model}", "-o", "{out}/p", "--device", "tpu"], (2,)),
        C("ppo: --device cuda without CUDA", ["ppo", "--data", "{good.jsonl}", "--model", "{model}", "-o", "{out}/p", "--device", "cuda"], (2,), heavy=True),
        C("ppo: -o an existing file", ["ppo", "--data", "{good.jsonl}", "--model", "{model}", "-o", "{afile}"], (2,), heavy=True),
        C("ppo: binary --data", ["ppo", "--data", "{binary.jsonl}", "--model", "{model}", "-o", "{out}/p"], (2,), heavy=True),
        C("ppo: binary --eval-data", ["ppo", "--data", "{good.jsonl}", "--eval-data", "{binary.jsonl}", "--model", "{model}", "-o", "{out}/p"], (2,), heavy=True),
        C("ppo: a corrupt --model (config.json)", ["ppo", "--data", "{good.jsonl}", "--model", "{model-config}", "-o", "{out}/p", "--max-steps", "1"], (2,), heavy=True),
        # transcribe
        C("transcribe: --device tpu", ["transcribe", "{a.wav}", "--device", "tpu"], (2,)),
        C("transcribe: --device cuda without CUDA", ["transcribe", "{a.wav}", "--model", "{model}", "--device", "cuda"], (2,), heavy=True),
        C("transcribe: truncated weights", ["transcribe", "{a.wav}", "--model", "{model-truncated}"], (2,), heavy=True),
        C("transcribe: zero-byte weights", ["transcribe", "{a.wav}", "--model", "{model-zero}"], (2,), heavy=True),
        C("transcribe: broken config.json", ["transcribe", "{a.wav}", "--model", "{model-config}"], (2,), heavy=True),
        C("transcribe: broken abcscribe.json", ["transcribe", "{a.wav}", "--model", "{model-meta}"], (2,), heavy=True),
        C("transcribe: binary JSONL", ["transcribe", "{binary.jsonl}"], (1, 2)),
        C("transcribe: one malformed JSONL line", ["transcribe", "{malformed.jsonl}"], (1,), check=records_for("a.wav", "b.wav")),
        C("transcribe: wrong field types", ["transcribe", "{types.jsonl}"], (1,), check=records_for("b.wav")),
        C("transcribe: x.wav and x.flac to one x.abc", ["transcribe", "{two}", "-o", "{out}"], (2,)),
        C("transcribe: one missing path among several", ["transcribe", "{a.wav}", "{nope.wav}"], (1,), check=records_for("a.wav")),
        C("transcribe: empty stdin", ["transcribe", "-"], (2,), stdin=b"", check=said_nothing_to_do),
        C("transcribe: --temperature -1", ["transcribe", "{a.wav}", "--temperature", "-1"], (2,)),
    ]


# ---- running ---------------------------------------------------------------------------------
def _fill(arg: str, root: Path) -> str:
    if arg.startswith("{") and "}" in arg:
        name, rest = arg[1:].split("}", 1)
        return str(root / name) + rest
    return arg


def run_case(case: Case, root: Path, work: Path) -> Outcome:
    """Run ``case`` on a fresh copy of the output area (``work``: a folder of its own, with the
    inputs linked in)."""
    work.mkdir(parents=True, exist_ok=True)
    for p in root.iterdir():
        link = work / p.name
        if not link.exists():
            link.symlink_to(p)
    if case.setup:
        case.setup(work)
    argv = [S, "-m", "abcscribe", *(_fill(a, work) for a in case.argv)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    stdout_fd = None
    if case.closed_stdout:
        r, stdout_fd = os.pipe()
        os.close(r)
    stdin = case.stdin
    if stdin is None and case.argv[:1] == ["score"] and case.closed_stdout:
        stdin = (root / "pairs.jsonl").read_bytes()

    def pre():
        if case.umask is not None:
            os.umask(case.umask)

    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, input=stdin if stdin is not None else b"",
                              stdout=stdout_fd if stdout_fd is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=case.timeout, env=env, cwd=work,
                              preexec_fn=pre)
        status, out, err = proc.returncode, (proc.stdout or b"").decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        status, out, err = None, "", (e.stderr or b"").decode("utf-8", "replace")
    finally:
        if stdout_fd is not None:
            os.close(stdout_fd)
    o = Outcome(case, status, err, out, time.monotonic() - t0)
    o.hang = status is None
    o.traceback = "Traceback (most recent call last)" in err
    o.wrong_status = not o.hang and status not in case.status
    if not o.hang and case.check is not None:
        o.lost = case.check(work, subprocess.CompletedProcess(argv, status, out, err))
    return o


def report(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        flags = [f for f, on in (("TRACEBACK", o.traceback), ("HANG", o.hang),
                                 ("LOST: " + (o.lost or ""), bool(o.lost)),
                                 (f"STATUS {o.status} (want {'/'.join(map(str, o.case.status))})", o.wrong_status)) if on]
        last = o.stderr.strip().splitlines()[-1][:110] if o.stderr.strip() else ""
        lines.append(f"{'ok  ' if o.ok else 'FAIL'} {o.case.name:<52} {o.seconds:6.1f}s  {'; '.join(flags) or last}")
    n = len(outcomes)
    lines.append(f"{n} cases: {sum(o.traceback for o in outcomes)} tracebacks, "
                 f"{sum(o.hang for o in outcomes)} hangs, {sum(bool(o.lost) for o in outcomes)} losses, "
                 f"{sum(o.wrong_status for o in outcomes)} wrong statuses; {sum(o.ok for o in outcomes)} ok")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = make_inputs(Path(tmp) / "in")
        chosen = [c for c in cases() if not argv or any(a in c.name for a in argv)]
        outcomes = []
        for i, c in enumerate(chosen):
            o = run_case(c, root, Path(tmp) / f"case{i}")
            print(report([o]).splitlines()[0], flush=True)
            outcomes.append(o)
        print(report(outcomes).splitlines()[-1])
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
