"""The --device option every model-facing command shares: one spelling, one check."""

from __future__ import annotations

import re

from abcscribe.core.errors import UserError

DEVICE_HELP = "auto (cuda when there is one, else cpu), cpu, cuda, cuda:N or mps."


def device_name(spec: str) -> str:
    """``spec`` normalised, its spelling checked (no torch, nothing probed): a UserError for a
    name that is none of auto, cpu, cuda, cuda:N, mps."""
    s = str(spec).strip().lower()
    if s in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:\d+)?", s):
        return s
    raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")


def check_device(spec: str) -> str:
    """``spec`` normalised ('auto' stays 'auto'); a UserError for an unknown name or for a
    device that is not here (cuda on a machine without CUDA), before any work starts."""
    s = device_name(spec)
    if s in ("auto", "cpu"):
        return s
    if re.fullmatch(r"cuda(:\d+)?", s):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA device is available here "
                            "(--device cpu, or auto to use one when there is)")
        if ":" in s and int(s.split(":")[1]) >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices")
        return s
    if s == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UserError("--device mps: Apple's MPS backend is not available here")
        return s
    raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")


def resolve_device(spec: str) -> str:
    """The device to put tensors on: ``check_device``, with 'auto' made cuda or cpu."""
    s = check_device(spec)
    if s != "auto":
        return s
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
