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
