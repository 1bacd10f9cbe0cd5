"""Supervised fine-tuning of an audio LM on Q&A records, with trl's SFTTrainer.

The model family's ``collate`` builds each batch (audio or embeddings, prompt, answer; labels on
the answer only), so the trainer is told to leave the dataset alone
(``skip_prepare_dataset``, ``remove_unused_columns=False``) and the loss is the mean
cross-entropy over answer tokens (completion-only), normalised over the whole accumulated batch."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from abcscribe.core.errors import UserError
from abcscribe.core.options import check_options, check_tracker, option

LOG_FILE = "log.jsonl"
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass(frozen=True)
class SFTOptions:
    """Every option of ``abcscribe sft``: name, default, help and rule, declared once here."""

    model: str = option("tiny", "'tiny' (built from scratch for the data), an audio LLM dir/hub id (e.g. Qwen/Qwen2-Audio-7B-Instruct), a causal LM dir/hub id (wrapped in a composed model), or an sft/ppo output dir.")
    split: str | None = option(None, "Train only on records of this split (e.g. train); default: every record of --data.")
    lora: bool | None = option(None, "LoRA adapters, or full fine-tuning (default: LoRA for pretrained models, full for tiny).", flags=["--lora/--full"])
    lora_r: int = option(16, "LoRA rank.", min=1)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r).", above=0)
    lora_dropout: float = option(0.05, "Dropout on the LoRA path, in [0, 1).", min=0.0, max=0.999)
    train_encoder: bool = option(False, "Also train the audio encoder of an audio LLM (frozen by default; the projection always trains).")
    encoder: str = option("cqt", "Encoder of a new composed model (cqt, mel, crepe, crepe-tiny, notes:DIR from pretrain, hf:DIR), when --model is tiny or a causal LM; precomputed 'embedding' files in the records are used when present.")
    projector: str = option("mlp", "Projection of a new composed model: mlp (2 layers) or linear.", choices=("mlp", "linear"))
    stack: int | None = option(None, "Adjacent encoder frames stacked into one audio token of a new composed model (default: 4 for tiny, 2 otherwise).", min=1)
    lr: float | None = option(None, "Peak learning rate, > 0 (default: 1e-3 full tiny, 2e-4 LoRA, 2e-5 full fine-tuning of a pretrained model).", above=0.0)
    epochs: float = option(3.0, "Passes over the training records, > 0 (ignored with --max-steps).", above=0.0)
    max_steps: int = option(-1, "Stop after this many optimiser steps (-1: use --epochs; 0: save the model untrained).", min=-1)
    batch_size: int = option(8, "Records per device per step.", min=1)
    grad_accum: int = option(1, "Batches accumulated per optimiser step.", min=1)
    warmup_ratio: float = option(0.03, "Fraction of steps of linear warm-up (cosine decay after), in [0, 1).", min=0.0, max=0.999)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0.0, cli=False)
    bf16: bool = option(False, "bfloat16 mixed precision.")
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass (less memory, slower).")
    save_steps: int = option(0, "Save a checkpoint-N folder every N steps (0: only the final model).", min=0)
    eval_steps: int = option(0, "Evaluate every N steps (0: with each checkpoint, else once per epoch).", min=0)
    logging_steps: int = option(10, "Log the training loss every N steps.", min=1)
    resume: bool = option(False, "Continue from the newest complete checkpoint in --output-dir.")
    overwrite: bool = option(False, "Train again even when --output-dir holds a finished model.")
    seed: int = option(0, "Seed of initialisation and data order.")
    dtype: str | None = option(None, "Load a pretrained model in this dtype (default: its own).", choices=("float32", "bfloat16", "float16"))
    device: str = option("auto", "Where to train: auto (cuda when there is one, else cpu), cpu, cuda or mps; several GPUs: accelerate launch.")
    report_to: str = option("none", "Also log to: none, tensorboard or wandb (DIR/log.jsonl is always written).", choices=REPORT_TO)
    tiny: dict = option({}, "Overrides of the tiny preset.", cli=False)

    def check(self) -> None:
        """UserError naming the option for a value training cannot run with; before any work."""
        from abcscribe.core.device import check_device

        check_options(self)
        check_tracker(self.report_to)
        if check_device(self.device).startswith("cuda:"):
            raise UserError(f"--device {self.device}: sft takes cuda, not one GPU by number "
                            "(choose it with CUDA_VISIBLE_DEVICES, or several with accelerate launch)")


def read_records(
    path: str | Path, warn: Callable[[str], None], need_answer: bool = True, split: str | None = None
) -> list[dict[str, Any]]:
    """Records of a Q&A JSONL (of ``split`` only, when given) whose audio (or embedding) exists
    and whose answer is not empty; the others are reported through ``warn`` and skipped."""
    from abcscribe.core.files import read_jsonl
    from abcscribe.core.models.records import check_record, resolve_paths

    from abcscribe.core.files import BadLine, clip_span

    base = Path(path).parent if str(path) != "-" else None
    good = []
    for rec in read_jsonl(path, bad="keep"):
        if isinstance(rec, BadLine):
            warn(f"skipping {rec['error']}")
            continue
        if split is not None and rec.get("split") != split:
            continue
        rid = rec.get("id", "record")
        if rec.get("error"):
            warn(f"skipping {rid}: it carries an error ({rec['error']})")
            continue
        try:
            for key in ("audio", "embedding"):
                if rec.get(key) is not None and not isinstance(rec[key], str):
                    raise UserError(f"{rid}: '{key}' must be a path (a string)")
            if "messages" in rec and not isinstance(rec["messages"], list):
                raise UserError(f"{rid}: 'messages' must be a list of chat messages")
            clip_span(rec)
            rec = resolve_paths(rec, base)
            check_record(rec, need_answer=need_answer)
        except UserError as e:
            warn(f"skipping {e}")
            continue
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # fields of odd types
            warn(f"skipping {rid}: malformed record ({type(e).__name__}: {e})")
            continue
        good.append(rec)
    return good


def prepare(lm, records: list[dict[str, Any]], warn, desc: str = "features") -> list[dict[str, Any]]:
    """Compute (and cache) each record's model inputs once; records that fail are reported and
    skipped, so a bad file never stops training halfway. Under a launcher the processes split
    the records of a composed model (those of one clip together), then hand each other the
    features they computed: each clip is encoded once in the run, not once per process."""
    from abcscribe.core.distributed import Ranks
    from abcscribe.core.models.features import FeatureSource
    from abcscribe.core.progress import progress

    ranks = Ranks.from_env()
    source = getattr(lm, "features", None)
    split = ranks.several and isinstance(source, FeatureSource)
    if split:
        keys = [source.key(rec) for rec in records]
        todo = ranks.take(records, keys=keys)
    else:
        todo = list(range(len(records)))
    failed: dict[int, str] = {}
    for i in progress(todo, total=len(todo), desc=desc):
        try:
            lm.collate([records[i]], answers=True)
        except Exception as e:  # unreadable audio, wrong embedding size, ...
            failed[i] = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    if split:
        source.adopt(ranks.share(source.cached({keys[i] for i in todo})))
        failed = {i: msg for part in ranks.gather(failed) for i, msg in part.items()}
    if ranks.is_main or not split:
        for i in sorted(failed):
            warn(f"skipping {records[i].get('id', 'record')}: {failed[i]}")
    return [rec for i, rec in enumerate(records) if i not in failed]


def _index_dataset(start: int, n: int):
    """A datasets.Dataset of row numbers: the records themselves (nested chat messages) stay in
    Python and the collator looks them up, so nothing is converted to Arrow."""
    from datasets import Dataset

    return Dataset.from_dict({"row": list(range(start, start + n))})


class _Collator:
    """Rows of the index datasets (train rows first, then eval rows) -> the model family's
    batch, labels on the answers only."""

    def __init__(self, lm, records):
        self.lm, self.records = lm, records

    def __call__(self, rows):
        return self.lm.collate([self.records[r["row"]] for r in rows], answers=True)


def _trainer_class():
    import torch
    from trl import SFTTrainer

    class AudioSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is computed from the model's logits and the collated labels:
        our models take audio inputs the fused LM head of trl does not know about."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[:, :-1].float()
            target = labels[:, 1:].to(logits.device)
            mask = target != -100
            nll = torch.nn.functional.cross_entropy(
                logits[mask], target[mask], reduction="sum"
            ) if bool(mask.any()) else logits.sum() * 0.0
            n = num_items_in_batch if num_items_in_batch is not None else mask.sum()
            loss = nll / torch.as_tensor(n, device=nll.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            with torch.no_grad():
                correct = (logits[mask].argmax(-1) == target[mask]).sum()
                nv = self.accelerator.gather_for_metrics(mask.sum()).sum()
                nc = self.accelerator.gather_for_metrics(correct).sum()
                self._metrics[mode]["mean_token_accuracy"].append((nc / nv).item() if nv > 0 else 0.0)
            return (loss, outputs) if return_outputs else loss

    return AudioSFTTrainer


def _log_callback(out_dir: Path, warn_stream):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Every log (train loss, eval loss, learning rate) as one JSONL line in DIR/log.jsonl
        and a short line on stderr."""

        def __init__(self):
            self.t0 = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                   "time": round(time.monotonic() - self.t0, 2)}  # fmt: skip
            rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
            with open(out_dir / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
            shown = " ".join(
                f"{k}={rec[k]:.4g}" if isinstance(rec[k], float) else f"{k}={rec[k]}"
                for k in ("step", "epoch", "loss", "eval_loss", "learning_rate", "mean_token_accuracy")
                if k in rec
            )
            print(f"sft: {shown}", file=warn_stream, flush=True)

    return JsonlLog()


def _bar_callback(base):
    class Bar(base):
        """The Trainer's progress bar (steps, rate, ETA) without its copy of the log lines."""

        def on_log(self, args, state, control, logs=None, **kw):
            pass

    return Bar()


def default_lr(kind: str, lora: bool) -> float:
    if lora:
        return 2e-4
    return 1e-3 if kind in ("tiny",) else 2e-5


def run_sft(
    train_path: str | Path,
    output_dir: str | Path,
    opts: SFTOptions,
    eval_path: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``opts.model`` on the records of ``train_path`` and save the result to
    ``output_dir`` (loads with ``load_model``). Returns a summary (steps, losses, seconds)."""
    from abcscribe.core.files import check_output_dir

    # options, output and data paths checked first: before torch loads (seconds)
    warn = warn or (lambda m: print(f"abcscribe: warning: {m}", file=sys.stderr))
    opts.check()
    out = check_output_dir(output_dir, "--output-dir")
    for path, flag in ((train_path, "--data"), (eval_path, "--eval-data")):
        if path is not None and str(path) != "-" and not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")

    from abcscribe.core.modeldir import plan_run
    from abcscribe.core.models import build_model, model_kind
    from abcscribe.core.models.common import one_thread_for_small_cpu_model, read_meta

    plan = plan_run(out, "sft", resume=opts.resume, overwrite=opts.overwrite,
                    state_file="trainer_state.json", warn=warn, log_file=LOG_FILE)
    if plan.action == "skip":
        return {**plan.finished, "skipped": True}

    # the data and the model's files are checked before torch and trl load (seconds)
    train = read_records(train_path, warn, split=opts.split)
    if not train:
        raise UserError(f"{train_path}: no usable training records")
    evals = read_records(eval_path, warn) if eval_path else []
    if eval_path and not evals:
        raise UserError(f"--eval-data {eval_path}: no usable records")
    kind = model_kind(opts.model)

    from transformers import PrinterCallback, ProgressCallback, set_seed
    from trl import SFTConfig

    from abcscribe.core.progress import hub_bars, on_terminal

    hub_bars()

    set_seed(opts.seed)
    lora = opts.lora
    if lora is None:
        meta = read_meta(opts.model) if Path(opts.model).is_dir() else None
        lora = kind in ("causal-lm", "hf-audio") and not (meta and meta.get("lora") is False)
    if kind == "tiny" and lora:
        warn("LoRA on the tiny preset, which is built from scratch: --full trains it better")
    encoder = opts.encoder
    if kind in ("tiny", "causal-lm") and train[0].get("embedding"):
        # a new composed model takes the encoder that made the records' embeddings, so that
        # transcribe computes the same features from raw audio
        from abcscribe.core.models.records import load_embedding

        made_by = load_embedding(train[0])[1].get("encoder")
        # stored CQT frames are what a note encoder reads: they need no other encoder
        feeds_notes = made_by == "cqt" and encoder.startswith("notes:")
        if made_by and made_by != encoder and not feeds_notes:
            warn(f"the records' embeddings come from encoder {made_by!r}; using it (not {encoder!r})")
            encoder = made_by
    lm = build_model(
        opts.model, train, dtype=opts.dtype, encoder=encoder, projector=opts.projector,
        stack=opts.stack, tiny=opts.tiny,
    )  # fmt: skip
    if opts.train_encoder and lm.family == "composed":
        warn("--train-encoder: the composed model's encoder runs outside the model (features are "
             "precomputed); only the projection and the LM train")  # fmt: skip
    if lm.family == "hf-audio":
        lm.train_mode(lora, opts.lora_r, opts.lora_alpha, opts.lora_dropout, train_encoder=opts.train_encoder)
    else:
        lm.train_mode(lora, opts.lora_r, opts.lora_alpha, opts.lora_dropout)

    one_thread_for_small_cpu_model(lm, max_params=50_000_000)
    if opts.max_steps == 0:
        # the model as it starts (the "untrained" baseline of an experiment)
        summary = {"model": opts.model, "family": lm.family, "lora": bool(lora),
                   "train_records": len(train), "eval_records": len(evals), "steps": 0,
                   "train_loss": None, "eval_loss": None, "seconds": 0.0}  # fmt: skip
        lm.save(out, extra={"sft": {**summary, "options": asdict(opts), "data": str(train_path)}})
        return summary
    from abcscribe.core.distributed import Ranks
    from abcscribe.core.device import resolve_device

    # the processes share the inputs they prepare: their group starts as the Trainer's would
    use_cpu = resolve_device(opts.device) == "cpu"
    Ranks.from_env().start(cpu=use_cpu)
    train = prepare(lm, train, warn, desc="sft: preparing")
    if not train:
        raise UserError(f"{train_path}: no usable training records")
    evals = prepare(lm, evals, warn, desc="sft: preparing eval") if evals else []

    lr = opts.lr if opts.lr is not None else default_lr(kind, lora)
    steps_per_epoch = math.ceil(len(train) / (opts.batch_size * opts.grad_accum))
    total = opts.max_steps if opts.max_steps > 0 else math.ceil(steps_per_epoch * opts.epochs)
    eval_steps = opts.eval_steps or opts.save_steps or max(1, steps_per_epoch)
    # the Trainer places the model: on the CPU when asked to, else on the accelerator it finds
    # (cuda, or mps where there is no cuda), which check() has made sure is there
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=lr,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps if opts.max_steps > 0 else -1,
        warmup_steps=int(round(opts.warmup_ratio * total)),
        lr_scheduler_type="cosine",
        weight_decay=opts.weight_decay,
        bf16=opts.bf16,
        activation_checkpointing=opts.gradient_checkpointing,
        logging_steps=max(1, min(opts.logging_steps, total)),
        logging_first_step=True,
        save_strategy="steps" if opts.save_steps > 0 else "no",
        save_steps=opts.save_steps if opts.save_steps > 0 else 500,
        eval_strategy=("steps" if evals else "no"),
        eval_steps=eval_steps,
        report_to=[] if opts.report_to in ("none", "") else [opts.report_to],
        seed=opts.seed,
        data_seed=opts.seed,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        completion_only_loss=True,
        max_length=None,
        disable_tqdm=not on_terminal(),  # a bar with rate and ETA for a person watching
        dataloader_num_workers=0,
        use_cpu=use_cpu,
        save_only_model=False,
        ddp_find_unused_parameters=lm.family == "hf-audio",
    )
    processing = getattr(lm, "processor", None) or lm.tokenizer
    Trainer = _trainer_class()
    trainer = Trainer(
        model=lm.model,
        args=args,
        train_dataset=_index_dataset(0, len(train)),
        eval_dataset=_index_dataset(len(train), len(evals)) if evals else None,
        processing_class=processing,
        data_collator=_Collator(lm, train + evals),
    )
    trainer.model_accepts_loss_kwargs = True  # our compute_loss normalises over the accumulated batch
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if on_terminal():  # the Trainer's bar; the log lines are ours (JsonlLog)
        trainer.add_callback(_bar_callback(ProgressCallback))
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        if plan.action != "resume":
            (out / LOG_FILE).unlink(missing_ok=True)
    trainer.add_callback(_log_callback(out, sys.stderr))
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
    seconds = time.monotonic() - t0
    final_eval = trainer.evaluate() if evals else {}
    lm.model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
    lm.device = trainer.args.device
    summary = {
        "model": opts.model,
        "family": lm.family,
        "lora": bool(lora),
        "train_records": len(train),
        "eval_records": len(evals),
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "eval_loss": float(final_eval["eval_loss"]) if "eval_loss" in final_eval else None,
        "seconds": round(seconds, 2),
        # records of all processes (each takes batch_size a step)
        "samples_per_second": round(result.global_step * opts.batch_size * opts.grad_accum
                                    * trainer.args.world_size / max(seconds, 1e-9), 3),  # fmt: skip
        "lr": lr,
    }
    if trainer.is_world_process_zero():
        options = {k: v for k, v in asdict(opts).items()}
        lm.save(out, extra={"sft": {**summary, "options": options, "data": str(train_path)}})
    else:
        summary["main_process"] = False  # under accelerate launch: only rank 0 reports
    return summary
