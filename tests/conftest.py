import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def write_jsonl(path, records):
    """``records`` as a JSONL file at ``path``; returns the path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_cli(*args, input=None, check=False, cwd=None):
    """Run the installed ``abcscribe`` the way a user does (a fresh process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "abcscribe", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"abcscribe {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


def need_tool(name: str):
    """Skip when a system tool is missing, but never in CI, where .ci/run installs it."""
    import os

    if shutil.which(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
