"""The CLI shell: help, version, one-line errors, and a man page that documents every option."""

import re

import typer

from abcscribe import __version__
from abcscribe.cli import app
from conftest import ROOT


def _commands():
    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items()}


def test_version(cli):
    p = cli("--version")
    assert p.returncode == 0
    assert p.stdout.strip() == f"abcscribe {__version__}"


def test_help_lists_every_subcommand(cli):
    p = cli("--help")
    assert p.returncode == 0
    for name in _commands():
        assert name in p.stdout


def test_every_subcommand_has_a_man_page_listing_its_options():
    assert (ROOT / "man" / "abcscribe.1").exists()
    for name, cmd in _commands().items():
        page = ROOT / "man" / f"abcscribe-{name}.1"
        assert page.exists(), f"missing man page for {name}"
        text = page.read_text().replace("\\-", "-")
        for param in cmd.params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    if opt.startswith("--") and opt != "--help":
                        assert re.search(re.escape(opt) + r"\b", text), f"{name}: {opt} not in man page"
        assert name in (ROOT / "man" / "abcscribe.1").read_text()


def test_unknown_option_is_one_line_usage_error(cli):
    p = cli("score", "--no-such-option")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "--no-such-option" in p.stderr
