"""Scoring predicted ABC against references, as a batch: ``ScoreOptions`` (every option of
``abcscribe score``, declared once), the pairs (two files, two folders paired by relative
path, or JSONL records), and ``score_pairs`` (one record per pair, a summary). The metrics are
``core.reward``'s."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, option

# record fields that hold ABC text: read, not echoed back
_TEXT_FIELDS = ("ref", "pred")


@dataclass(frozen=True)
class ScoreOptions:
    """Every option of ``abcscribe score`` but the inputs: name, default, help and rule,
    declared once."""

    weights: str | None = option(None, "Weights of the loss components pitch, metre, tempo, instrument, rhythm, note_f1 (names left out weigh 0; normalised by their sum). Default: the seed's pitch=0.5,metre=0.15,tempo=0.15,instrument=0.2.", metavar="NAME=W,...")
    no_note_metrics: bool = option(False, "Skip note_f1/note_precision/note_recall/note_f1_offset (faster); they are null in the records unless note_f1 has a weight.")
    summary: bool = option(False, "After the records, print per-metric mean, median and a 95% bootstrap interval of the mean as a table on stderr.")
    summary_json: bool = option(False, 'After the records, print the summary as one final JSON record on stdout ({"summary": {...}, "pairs": N, "failed": K}).')
    resamples: int = option(1000, "Bootstrap resamples for the summary interval (0-100,000).", metavar="N", min=0, max=100_000)

    def check(self) -> dict[str, float] | None:
        """UserError naming the option for a value that cannot score; before any work.
        Returns the weights (None: the seed's)."""
        check_options(self)
        if self.weights is None:
            return None
        from abcscribe.core import reward

        return reward.parse_weights(self.weights)


def score_pairs(ref: str | None, pred: str | None, opts: ScoreOptions, out: TextIO) -> int:
    """Score each pair (``ref``/``pred``: two files or two folders; both None: JSONL pairs on
    stdin), one JSONL record per pair on ``out``, then the summary ``opts`` asks for. Returns
    the exit status: 1 when any pair failed, else 0; no pairs at all is a UserError."""
    from abcscribe.core import reward
    from abcscribe.core.files import Batch, nothing_to_do, write_record
    from abcscribe.core.progress import progress

    weights = opts.check()
    batch = Batch()
    records = []
    for rec, ref_text, pred_text in progress(pairs(ref, pred), desc="score", unit="pair"):
        with batch.guard(rec):
            s = reward.score(ref_text(), pred_text(), weights=weights,
                             note_metrics=not opts.no_note_metrics)
            rec.update(s.as_dict())
        write_record(out, rec)
        records.append(rec)
    if not records:
        raise nothing_to_do("no pairs to score")

    if opts.summary or opts.summary_json:
        scored = [r for r in records if not r.get("error")]  # upstream records carry "error": null
        table = reward.summarize(scored, resamples=opts.resamples)
        if opts.summary:
            print_table(table, len(scored), batch.failed)
        if opts.summary_json:
            write_record(out, {"summary": table, "pairs": len(scored), "failed": batch.failed})
    return batch.status()


def pairs(ref: str | None, pred: str | None):
    """(record, ref-text thunk, pred-text thunk) per pair, lazily, in input order."""
    if (ref is None) != (pred is None):
        raise UserError("give both --ref and --pred (or neither, and JSONL pairs on stdin)")
    if ref is None:
        if sys.stdin.isatty():
            raise UserError("give --ref and --pred, or JSONL pairs on stdin")
        return _jsonl_pairs()
    rp, pp = Path(ref), Path(pred)
    for p, opt in ((rp, "--ref"), (pp, "--pred")):
        if not p.exists():
            raise UserError(f"{opt} {p}: no such file or folder")
    if rp.is_dir() != pp.is_dir():
        raise UserError("--ref and --pred must both be files or both be folders")
    if not rp.is_dir():
        return iter([_file_pair(rp.name, rp, pp)])
    return _folder_pairs(rp, pp)


def _folder_pairs(rp: Path, pp: Path):
    from abcscribe.core.files import ABC_EXTS

    refs = sorted((q.relative_to(rp) for q in rp.rglob("*")
                   if q.is_file() and q.suffix.lower() in ABC_EXTS), key=lambda q: q.parts)
    if not refs:
        raise UserError(f"--ref {rp}: no .abc files in the folder")
    ref_set = set(refs)
    orphans = [q for q in pp.rglob("*") if q.is_file() and q.suffix.lower() in ABC_EXTS
               and q.relative_to(pp) not in ref_set]
    if orphans:
        from abcscribe.core.files import warn

        warn(f"{len(orphans)} prediction(s) in {pp} have no reference (e.g. {orphans[0]}); "
             "not scored")
    for rel in refs:
        yield _file_pair(str(rel), rp / rel, pp / rel)


def _file_pair(name: str, ref_path: Path, pred_path: Path):
    rec = {"id": name, "ref_path": str(ref_path), "pred_path": str(pred_path)}
    return rec, (lambda: _read_ref(ref_path)), (lambda: _read_pred(pred_path))


def _jsonl_pairs():
    from abcscribe.core.files import BadLine, read_jsonl

    for i, rec in enumerate(read_jsonl("-", bad="keep"), 1):
        if isinstance(rec, BadLine):  # that line's error record; the others are scored
            yield {"line": rec["line"]}, _raise(rec["error"]), _raise(rec["error"])
            continue
        out = {k: v for k, v in rec.items() if k not in _TEXT_FIELDS}
        yield out, _text_of(rec, "ref", i, _read_ref), _text_of(rec, "pred", i, _read_pred)


def _raise(message: str):
    def get() -> str:
        raise UserError(message)

    return get


def _text_of(rec: dict, key: str, line: int, read):
    def get() -> str:
        if isinstance(rec.get(key), str):
            return rec[key]
        path = rec.get(key + "_path")
        if isinstance(path, str) and path:
            return read(Path(path))
        raise UserError(f"stdin record {line}: no {key!r} (ABC text) or {key + '_path'!r}")

    return get


def _read_ref(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such reference file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: reference is not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_pred(path: Path) -> str:
    try:
        # a model's output: undecodable bytes are its problem, scored rather than refused
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise UserError(f"{path}: no such prediction file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def print_table(table: dict, pairs: int, failed: int) -> None:
    lines = [f"{pairs} pairs scored" + (f", {failed} failed" if failed else ""),
             f"{'metric':<16}{'n':>6}{'mean':>9}{'median':>9}   95% CI of the mean"]
    for name, st in table.items():
        lo, hi = st["ci95"]
        lines.append(f"{name:<16}{st['n']:>6}{st['mean']:>9.4f}{st['median']:>9.4f}"
                     f"   [{lo:.4f}, {hi:.4f}]")
    print("\n".join(lines), file=sys.stderr)
