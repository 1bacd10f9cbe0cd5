"""abcscribe embed: audio to frame embeddings (.safetensors) with a built-in or pretrained encoder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import List, Optional

import typer

from abcscribe.cmds._base import Batch, device_option, emit, progress
from abcscribe.core.errors import UserError


def main(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT...",
        help="Audio files, folders of audio (walked recursively), JSONL files whose records "
        "carry 'audio' (and optional 'offset', 'duration' in seconds), or - for JSONL on stdin.",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", metavar="DIR",
        help="Folder for the .safetensors files (mirrors the inputs' sub-folders).",
    ),
    encoder_name: str = typer.Option(
        "cqt", "--encoder",
        help="cqt, mel (librosa features), crepe, crepe-tiny (pretrained pitch tracker), or "
        "hf:DIR|HUB-ID (a transformers audio encoder; encoder-decoder models use the encoder).",
    ),
    layer: Optional[int] = typer.Option(
        None, "--layer",
        help="Hidden state of an hf: encoder to keep (0 = embedding output; negative counts "
        "from the end; default: the last).",
    ),
    pool_ms: float = typer.Option(
        0.0, "--pool-ms",
        help="Mean-pool into windows of this many milliseconds (100 = 10 Hz as in Llark); "
        "0 keeps the encoder's own frame rate.",
    ),
    device: str = device_option(),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size",
        help="Windows per forward pass for hf: encoders (default 4), frames for crepe "
        "(default 128).",
    ),
    dtype: str = typer.Option(
        "auto", "--dtype",
        help="Model precision: auto (float16 on cuda, float32 on cpu), float32, float16, "
        "bfloat16.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Recompute outputs that already exist (default: skip them)."
    ),
) -> None:
    """Compute frame embeddings of audio: one .safetensors per input (tensor 'embeddings'
    [frames, dim] + metadata) and one JSONL record per input on stdout. JSONL records are passed
    through with an 'embedding' path added."""
    from abcscribe.core import encoders
    from abcscribe.core.device import check_device
    from abcscribe.core.distributed import InputOrder, Ranks, reduce_counts
    from abcscribe.core.files import (AUDIO_EXTS, check_output_dir, check_unique_outputs,
                                      clip_span, gather_inputs, output_done)

    if pool_ms < 0:
        raise UserError(f"--pool-ms must be >= 0, got {pool_ms:g}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    ranks = Ranks.from_env()  # under torchrun / accelerate launch: this process's share
    device = ranks.device(check_device(device))
    check_output_dir(output, "-o")
    items = gather_inputs(inputs, AUDIO_EXTS, "audio files or records")
    check_unique_outputs((it.name, output / _out_name(it, 0.0, None)) for it in items
                         if not it.record and not it.error)
    enc = encoders.get_encoder(encoder_name, layer=layer, device=device, dtype=dtype,
                               batch_size=batch_size)

    # records of one clip share an output file: they go to the same process
    mine = ranks.take(items, keys=(_output_key(i, it) for i, it in enumerate(items)))
    batch = Batch()
    out_records = InputOrder(ranks, emit)
    done_now: set[Path] = set()
    for i in progress(mine, total=len(mine), desc="embed"):
        item = items[i]
        rec = item.record
        is_record = bool(rec)
        record = dict(rec) if is_record else {"audio": str(item.path) if item.path else None}
        if item.error and not is_record:
            record.setdefault("id", str(item.rel))
        with batch.guard(record, item.name):
            item.check()
            if item.path is None:
                raise UserError(f"{item.name}: record has no 'audio' path")
            offset, duration = clip_span(rec)
            out = output / _out_name(item, offset, duration)
            record["embedding"] = str(out)
            if out in done_now:
                meta = None  # the same clip again (Q&A records share clips)
            elif not overwrite and output_done(out):
                meta, record["skipped"] = None, True
            else:
                meta = encoders.embed_audio(enc, item.path, out, offset=offset,
                                            duration=duration, pool_ms=pool_ms)  # fmt: skip
                done_now.add(out)
            if not is_record:
                record.update(_summary(meta or encoders.read_embeddings(out)[1]))
        out_records(i, record)
    out_records.finish()
    batch.failed, batch.done = reduce_counts(ranks, batch.failed, batch.done)
    batch.finish()


def _output_key(index: int, item):
    """The output file ``item`` makes, or its index when that cannot be known yet."""
    from abcscribe.core.files import clip_span

    if item.error or item.path is None:
        return index
    try:
        return _out_name(item, *clip_span(item.record))
    except UserError:
        return index


def _summary(meta: dict) -> dict:
    keys = ("encoder", "layer", "frames", "dim", "frame_rate", "duration")
    out = {k: meta[k] for k in keys if k in meta}
    for k in ("frames", "dim"):
        if k in out:
            out[k] = int(out[k])
    for k in ("frame_rate", "duration"):
        if k in out:
            out[k] = float(out[k])
    return out


def _out_name(item, offset: float, duration: float | None) -> Path:
    """A file's embeddings mirror its path; a record's clip is named after its audio's stem plus
    a short hash of (audio, offset, duration), so Q&A records of the same clip share one file."""
    if not item.record:
        return item.rel.with_suffix(".safetensors")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(item.path).stem)[:80] or "audio"
    key = f"{Path(item.path).resolve()}|{offset:.6f}|{duration}"
    return Path(f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.safetensors")
