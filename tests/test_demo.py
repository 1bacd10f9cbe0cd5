"""The experiment Makefile end to end at a tiny size: every step runs as the plain abcscribe
command a user would type, and the report holds a row per system with numbers from the run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_examples_makefile_runs_every_stage_and_writes_the_report(tmp_path):
    run = tmp_path / "run"
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = [
        "make", "-C", str(ROOT / "examples"), "demo", f"RUN={run}", "PIECES=24", "SFT_STEPS=30",
        "PPO_STEPS=1", "EVAL_CLIPS=6", f"PYTHON={sys.executable}", "ABCSCRIBE=abcscribe",
        "PPO_ARGS=--batch-size 2 --samples-per-prompt 2 --max-new-tokens 48 --mini-batch-size 4",
        "DECODE=--temperature 0 --max-new-tokens 96 --batch-size 8",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((run / "report.json").read_text())
    systems = report["systems"]
    assert set(systems) == {"baseline", "untrained", "sft", "ppo"}
    for name, row in systems.items():
        assert row["n"] == 6, name
        assert 0.0 <= row["reward"]["mean"] <= 1.0
        lo, hi = row["reward"]["ci"]
        assert lo <= row["reward"]["mean"] <= hi
    assert report["ppo_minus_sft"]["reward"]["n"] == 6
    assert "sft_loss.png" in report["plots"] and (run / "sft_loss.png").stat().st_size > 1000
    md = (run / "report.md").read_text()
    assert "| ppo |" in md and "Paired difference ppo - sft" in md
    # an interrupted run resumes: nothing is redone when everything is there
    stamps = {p: p.stat().st_mtime_ns for p in (run / "sft" / "abcscribe.json", run / "ppo" / "abcscribe.json")}
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "abcscribe sft" not in again.stdout and "abcscribe render" not in again.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert "| ppo |" in again.stdout or "ppo " in again.stdout  # the table is printed again
