"""Each command's options are declared once: a dataclass field in core carries the option's
flag, default, help and rule, and the command line is derived from it. Bad values are one-line
errors naming the option, before any work."""

import dataclasses
import io
import re
import subprocess
import sys

import pytest
import typer

from abcscribe.cli import app
from abcscribe.core.abc2midi import ABC2MIDIOptions
from abcscribe.core.errors import UserError
from abcscribe.core.midi2abc import Midi2ABCOptions
from abcscribe.core.mkqa import MkqaOptions
from abcscribe.core.options import flag_of
from abcscribe.core.render import RenderOptions
from abcscribe.core.scoring import ScoreOptions
from abcscribe.core.train.pretrain import PretrainOptions
from abcscribe.core.train.sft import SFTOptions

DECLARED = {
    "midi2abc": Midi2ABCOptions, "abc2midi": ABC2MIDIOptions, "render": RenderOptions,
    "mkqa": MkqaOptions, "score": ScoreOptions, "pretrain": PretrainOptions, "sft": SFTOptions,
}


def _params(command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


@pytest.mark.parametrize("command", sorted(DECLARED))
def test_the_command_line_offers_each_field_with_its_flag_default_and_help(command):
    params = _params(command)
    for f in dataclasses.fields(DECLARED[command]):
        if not f.metadata.get("cli", True):
            continue
        p = params[f.name]
        assert flag_of(f) in p.opts
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        got = getattr(p.default, "value", p.default)  # choices are enums on the command line
        assert got == default, f.name
        assert p.help == f.metadata["help"]
        if f.metadata["choices"]:
            assert list(p.type.choices) == list(f.metadata["choices"])


@pytest.mark.parametrize("command", sorted(DECLARED))
def test_the_command_declares_no_field_a_second_time(command):
    import inspect

    from abcscribe.cmds import COMMANDS

    module = dict(COMMANDS)[command]
    fn = sys.modules.get(f"abcscribe.cmds.{module}") or __import__(f"abcscribe.cmds.{module}", fromlist=["_main"])
    own = set(inspect.signature(fn._main).parameters) - {"opts"}
    assert own.isdisjoint(f.name for f in dataclasses.fields(DECLARED[command]))


def test_the_choices_are_the_ones_core_knows():
    from abcscribe.core import audio, layouts
    from abcscribe.core.abc import LAYOUTS
    from abcscribe.core.mkqa import ENGINES, LAYOUTS as MKQA_LAYOUTS, SLAKH_AUDIO
    from abcscribe.core.render import ENGINES as RENDER_ENGINES

    assert MKQA_LAYOUTS == layouts.LAYOUTS and SLAKH_AUDIO == layouts.SLAKH_AUDIO
    assert ENGINES == RENDER_ENGINES == audio.ENGINES
    layout = next(f for f in dataclasses.fields(Midi2ABCOptions) if f.name == "layout")
    assert layout.metadata["choices"] == LAYOUTS


@pytest.mark.parametrize("opts, message", [
    (Midi2ABCOptions(bars_per_line=0), "--bars-per-line must be at least 1"),
    (Midi2ABCOptions(grid="300"), "--grid"),
    (Midi2ABCOptions(key="H#"), "--key"),
    (Midi2ABCOptions(jobs=-1), "--jobs must be at least 0"),
    (RenderOptions(sample_rate=0), "--sample-rate must be in [4000, 192000]"),
    (RenderOptions(max_seconds=float("nan")), "--max-seconds must be a finite number"),
    (MkqaOptions(max_seconds=0), "--max-seconds must be greater than 0"),
    (MkqaOptions(min_bars=2, max_bars=1), "--max-bars (1) is below --min-bars (2)"),
    (MkqaOptions(tasks="tempo,lyrics"), "lyrics"),
    (MkqaOptions(split="train=0.8,val"), "--split"),
    (ScoreOptions(resamples=100_001), "--resamples must be in [0, 100000]"),
    (ScoreOptions(weights="pitch=x"), "--weights"),
    (ABC2MIDIOptions(format="pdf"), "--format must be one of auto, midi, musicxml"),
    (PretrainOptions(lr=float("nan")), "--lr must be a finite number"),
    (PretrainOptions(steps=0), "--steps must be at least 1"),
    (SFTOptions(device="tpu"), "--device must be auto, cpu, cuda, cuda:N or mps"),
])
def test_a_bad_value_is_a_user_error_naming_the_option(opts, message):
    with pytest.raises(UserError) as e:
        opts.check()
    assert message in str(e.value)


def test_the_defaults_pass_their_own_rules():
    for cls in DECLARED.values():
        cls().check()


@pytest.mark.parametrize("argv", [
    ["midi2abc", "-", "--layout", "columns"],
    ["render", "-", "--format", "mp3"],
    ["mkqa", "x", "--slakh-audio", "some"],
    ["score", "--resamples", "-5"],
    ["abc2midi", "-", "--format", "pdf"],
    ["pretrain", "--data", "x.jsonl", "-o", "d", "--steps", "0"],
])
def test_bad_values_on_the_command_line_are_one_line_before_any_work(argv, tmp_path):
    p = subprocess.run([sys.executable, "-m", "abcscribe", *argv], input=b"", capture_output=True,
                       cwd=tmp_path, timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert argv[-2] in err  # the option is named
    assert list(tmp_path.iterdir()) == []  # nothing was made


def test_sft_device_cuda_on_a_machine_without_it_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda: no CUDA device"):
        SFTOptions(device="cuda").check()
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        SFTOptions(device="cuda:1").check()


def test_encoders_choose_devices_through_core_device(monkeypatch):
    import torch

    from abcscribe.core import device, encoders

    assert encoders.resolve_device is device.resolve_device
    with pytest.raises(UserError, match="--device must be"):
        encoders.get_encoder("cqt", device="tpu")
    assert encoders.get_encoder("cqt", device="cuda").name == "cqt"  # numpy: no device used
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device"):
        encoders.get_encoder("crepe-tiny", device="cuda")


# ---- progress inside one long input --------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_render_draws_a_bar_with_rate_on_a_terminal_and_nothing_elsewhere(monkeypatch):
    from abcscribe.core import progress
    from abcscribe.core.notes import Note, Piece, Voice
    from abcscribe.core.synth import synthesize

    piece = Piece(voices=[Voice(notes=[Note(start=i * 120, duration=120, pitch=60 + i % 12)
                                       for i in range(600)])])
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    synthesize(piece, 8000)
    assert quiet.getvalue() == ""

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(progress, "INNER_DELAY", 0.0)
    synthesize(piece, 8000)
    shown = term.getvalue()
    # the bar counts notes with a rate (how far it got before it closed depends on tqdm's
    # redraw interval: 512/600 was seen on a fast run)
    assert re.search(r"synth: .*\d+/600 .*note/s", shown), shown


def test_report_to_a_tracker_that_is_not_installed_is_one_line_with_the_fix(monkeypatch):
    import importlib.util

    from abcscribe.cmds._base import check_tracker

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"--report-to tensorboard: .*pip install 'abcscribe\[tensorboard\]'"):
        check_tracker("tensorboard")


def test_the_hub_and_trainer_bars_stay_on_a_terminal_and_go_elsewhere(monkeypatch):
    from transformers.utils import logging as hf_logging

    from abcscribe.core import progress

    hf_logging.enable_progress_bar()
    try:
        monkeypatch.setattr(progress, "_tty", lambda: True)
        progress.hub_bars()
        assert hf_logging.is_progress_bar_enabled()  # a real download shows its bar
        monkeypatch.setattr(progress, "_tty", lambda: False)
        progress.hub_bars()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


@pytest.mark.parametrize("argv", [
    ["sft", "--data", "x.jsonl", "-o", "run", "--lr", "-1"],
    ["sft", "--data", "missing.jsonl", "-o", "run"],
    ["pretrain", "--data", "x.jsonl", "-o", "enc", "--layers", "0"],
    ["mkqa", "missing", "--grid", "-2"],
])
def test_value_checks_come_before_torch_loads(argv, tmp_path):
    code = ("import sys\nfrom abcscribe.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.stdout.split() == ["2", "False"], p.stderr
