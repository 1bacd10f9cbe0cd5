"""Model and run directories on disk: checked before loading (a corrupt file is one line
naming it, not a traceback from deep inside a loader), and the run-directory lifecycle that
``sft`` and ``ppo`` share (a finished run is skipped, --resume continues from the newest
complete checkpoint, --overwrite starts again)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abcscribe.core.errors import UserError

META_FILE = "abcscribe.json"
# a checkpoint folder is complete once this marker is in it (written last, atomically)
COMPLETE = ".complete"


def check_model_dir(path: str | Path) -> None:
    """A UserError naming the first file of model directory ``path`` that cannot be what its
    name says: a JSON file that does not parse, a safetensors file that is empty, truncated or
    has a broken header."""
    p = Path(path)
    for f in sorted(p.glob("*.json")):
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"{f}: not a readable JSON file ({_why(e)}); the model directory "
                            "is corrupt or incomplete") from None
    for f in sorted(p.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            raise UserError(f"{f}: {problem}; the model directory is corrupt or incomplete")


def _why(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at line {e.lineno}"
    return getattr(e, "strerror", None) or type(e).__name__


def _safetensors_problem(f: Path) -> str | None:
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                return "empty file"
            if len(head) < 8:
                return "truncated (no header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                return "truncated or not safetensors (header longer than the file)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"unreadable safetensors header ({_why(e)})"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    if ends and 8 + n + max(ends) > size:
        return f"truncated ({size:,} bytes, the header describes {8 + n + max(ends):,})"
    return None


# ---- checkpoints ---------------------------------------------------------------------------
def checkpoint_step(p: Path) -> int:
    try:
        return int(p.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def checkpoint_problem(ck: Path, state_file: str) -> str | None:
    """Why checkpoint folder ``ck`` cannot be resumed from (None: it is complete).
    ``state_file`` is the file its writer saves last (the trainer state)."""
    state = ck / state_file
    if not state.is_file() or state.stat().st_size == 0:
        return f"no {state_file} (a save was interrupted)"
    if state.suffix == ".json":
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return f"{state_file} is not readable JSON"
    try:
        check_model_dir(ck)
    except UserError as e:
        return str(e).split("; ")[0]
    empty = [f.name for f in ck.glob("*.pt") if f.stat().st_size == 0]
    return f"{empty[0]} is empty" if empty else None


def latest_checkpoint(out: Path, state_file: str, warn: Callable[[str], None]) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``out``; torn ones (a kill during a
    save) are named through ``warn`` and passed over."""
    cks = sorted((p for p in out.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) >= 0),
                 key=checkpoint_step, reverse=True)
    for ck in cks:
        problem = checkpoint_problem(ck, state_file)
        if problem is None:
            return ck
        warn(f"{ck}: incomplete checkpoint, not resumed from ({problem})")
    return None


def save_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary folder beside ``folder``, then put it in
    ``folder``'s place with renames: a kill at any moment leaves the old folder or the new one,
    never half of one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ---- the run directory of sft and ppo --------------------------------------------------------
@dataclass
class RunPlan:
    """What a training command does with its output folder: ``skip`` (a finished run is
    there: ``finished`` holds its record), ``resume`` from ``checkpoint``, or ``fresh``."""

    action: str
    checkpoint: Path | None = None
    finished: dict | None = None


def plan_run(out: Path, kind: str, *, resume: bool, overwrite: bool, state_file: str,
             warn: Callable[[str], None], finished: Callable[[dict], bool] | None = None,
             log_file: str | None = None, act: bool = True) -> RunPlan:
    """The run-directory lifecycle ``sft`` and ``ppo`` share. ``kind`` is the key of the
    run's record in ``abcscribe.json``; ``finished(record)`` says whether that record is a
    finished run of what is asked (default: any record is). Stale checkpoints are removed
    when a run starts afresh over a finished one (``overwrite``); on resume, ``log_file``
    loses the rows logged after the checkpoint (the resumed run logs those steps again).
    ``act=False`` decides without touching the folder (the other processes of a launch)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out}: exists and is not a folder")
    if resume:
        ck = latest_checkpoint(out, state_file, warn) if out.is_dir() else None
        step = checkpoint_step(ck) if ck is not None else -1
        final = _run_steps(out, kind)  # a finished run resumes too (to train on further)
        if (out / state_file).is_file() and final is not None and final > step:
            ck, step = out, final
        if ck is not None:
            if log_file and act:
                trim_log(out / log_file, step)
            return RunPlan("resume", ck)
        warn(f"--resume: no complete checkpoint in {out}; starting afresh")
        return RunPlan("fresh")
    meta_path = out / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            meta = {}
        record = meta.get(kind) if isinstance(meta, dict) else None
        if isinstance(record, dict) and (finished is None or finished(record)):
            if not overwrite:
                warn(f"{out}: already holds a finished {kind} run; skipping (--overwrite trains again)")
                return RunPlan("skip", finished=record)
            for p in [*out.glob("checkpoint-*"), out / "base"] if act else []:
                shutil.rmtree(p, ignore_errors=True)
    return RunPlan("fresh")


def _run_steps(out: Path, kind: str) -> int | None:
    try:
        record = json.loads((out / META_FILE).read_text(encoding="utf-8")).get(kind) or {}
        return int(record["steps"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def trim_log(path: Path, step: int) -> None:
    """Keep the rows of a JSONL training log up to ``step`` (rows of later steps, and the
    closing evaluation, were logged by a run that is being resumed from ``step``)."""
    if not path.is_file():
        return
    from abcscribe.core.files import atomic_write

    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            row_step = int(row.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            continue  # a line torn by the kill
        if row_step < step or (row_step == step and row.get("eval") != "after"):
            kept.append(line + "\n")
    atomic_write(path, "".join(kept))
