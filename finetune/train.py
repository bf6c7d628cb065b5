"""LoRA fine-tuning with transformers' Trainer and peft: a run folder, live events, cancel and resume.

>>> cfg = FinetuneConfig(data="configs/finetune/data/capitals.jsonl", epochs=3)
>>> status = run_finetune(cfg, "runs/ft1")       # run_dir/adapter is a PEFT adapter folder

Run folder: ``config.yaml`` (resolved), ``events.jsonl`` (step, loss, val_loss, lr), ``status.json``,
``checkpoints/`` (Trainer checkpoints: adapter, optimizer, scheduler, RNG), ``adapter/``
(``adapter_config.json`` + ``adapter_model.safetensors``; ``PeftModel.from_pretrained`` loads it),
``merged/`` on request, ``metrics.json`` (before/after on the validation split) and
``examples.json`` (validation prompts with the base and tuned outputs side by side).

Only the LoRA matrices (and, for classification, the new head) train; ``status.json`` reports the
trainable share. SIGTERM stops after the current step with a checkpoint; ``resume`` continues
from the newest checkpoint with the same step counter.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import time
from pathlib import Path

from finetune.config import FinetuneConfig, base_model_for
from finetune.data import IGNORE, encode_classification, encode_generation, load_dataset
from studio.errors import StudioError
from studio.jobs import write_status


def load_base(cfg: FinetuneConfig, task: str, labels: list[str]):
    """(model, tokenizer) of the base model for the task."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from studio.registry import resolve_model

    spec = resolve_model(cfg.base_model or base_model_for(task))
    if task == "generation":
        from studio.backends.hf import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(spec)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return model, tok
    if spec.format != "hf":
        raise StudioError(f"classification needs a Hugging Face folder, not {spec.path}")
    tok = AutoTokenizer.from_pretrained(str(spec.path))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(spec.path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    return model, tok


def load_tokenizer(cfg: FinetuneConfig, task: str):
    """The base model's tokenizer alone (for previews): no weights are loaded."""
    from transformers import AutoTokenizer

    from studio.registry import resolve_model

    spec = resolve_model(cfg.base_model or base_model_for(task))
    if spec.format == "hf":
        tok = AutoTokenizer.from_pretrained(str(spec.path))
    else:
        from studio.backends.hf import converted_gguf_dir

        cached = converted_gguf_dir(spec)
        tok = AutoTokenizer.from_pretrained(str(cached)) if (cached / "tokenizer_config.json").is_file() \
            else AutoTokenizer.from_pretrained(str(spec.folder), gguf_file=spec.path.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def default_targets(model) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for pair in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"]):
        if set(pair) <= names:
            return pair
    raise StudioError("cannot guess LoRA target modules for this model; set target_modules")


class _Rows:
    """A torch Dataset over encoded rows."""

    def __init__(self, enc, task: str):
        self.enc, self.task = enc, task

    def __len__(self) -> int:
        return len(self.enc.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc.input_ids[i], "labels": self.enc.labels[i]}


def _collate(pad_id: int, task: str):
    import torch

    def collate(batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE, dtype=torch.long) if task == "generation" else torch.tensor(
            [b["labels"] for b in batch])
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            mask[i, :k] = 1
            if task == "generation":
                labels[i, :k] = torch.tensor(b["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def classification_metrics(preds: list[int], y: list[int], n_labels: int) -> dict:
    """``{"accuracy", "f1"}`` of predicted against true label ids, each rounded to 4 places.

    ``f1`` is the macro F1 over all ``n_labels`` classes, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c),
    and a class with no true positives scores 0. Every class counts, also one absent from both
    ``y`` and ``preds`` (sklearn would otherwise average only over the labels it sees).
    """
    from sklearn.metrics import accuracy_score, f1_score

    f1 = f1_score(y, preds, labels=list(range(n_labels)), average="macro", zero_division=0)
    return {"accuracy": round(float(accuracy_score(y, preds)), 4), "f1": round(float(f1), 4)}


def evaluate(model, tok, task: str, val_rows: list[dict], val_enc, labels: list[str], n_examples: int,
             batch_size: int = 8) -> tuple[dict, list[dict]]:
    """Validation loss (and perplexity), and the task metric: exact match, or accuracy and macro F1."""
    import torch

    from eval.checks import exact

    model.eval()
    collate = _collate(tok.pad_token_id, task)
    losses, weights, preds = [], [], []
    with torch.no_grad():
        for i in range(0, len(val_enc.input_ids), batch_size):
            batch = collate([{"input_ids": val_enc.input_ids[j], "labels": val_enc.labels[j]}
                             for j in range(i, min(i + batch_size, len(val_enc.input_ids)))])
            out = model(**batch)
            n = int((batch["labels"] != IGNORE).sum()) if task == "generation" else len(batch["labels"])
            losses.append(float(out.loss) * n)
            weights.append(n)
            if task == "classification":
                preds += out.logits.argmax(-1).tolist()
    loss = sum(losses) / max(1, sum(weights))
    metrics: dict = {"val_loss": round(loss, 4)}
    examples = []
    if task == "generation":
        metrics["perplexity"] = round(math.exp(min(loss, 50)), 3)
        right = 0
        for r in val_rows[:n_examples]:
            prompt = tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)
            with torch.no_grad():
                gen = model.generate(**prompt, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(gen[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            ref = r["messages"][-1]["content"]
            right += exact(text, ref)
            examples.append({"prompt": r["messages"][-2]["content"], "reference": ref, "output": text})
        metrics["exact_match"] = round(right / max(1, min(n_examples, len(val_rows))), 4)
    else:
        metrics.update(classification_metrics(preds, val_enc.labels, len(labels)))
        examples = [{"text": r["text"], "label": r["label"], "predicted": labels[p]}
                    for r, p in zip(val_rows[:n_examples], preds, strict=False)]
    model.train()
    return metrics, examples


def run_finetune(cfg: FinetuneConfig, run_dir: str | Path, resume: bool = False, progress=None) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from studio.config import load_config, save_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun
    main = rank == 0
    if not cfg.data:
        raise StudioError("set data: a JSONL (messages or instruction/output) or CSV/JSONL (text,label) file")
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(cfg.data, cfg.task)
    task = ds.task
    if cfg.validation:
        train_rows, val_rows = ds.rows, load_dataset(cfg.validation, task).rows
    else:
        train_rows, val_rows = ds.split(cfg.val_ratio, cfg.seed)
    if not val_rows:
        raise StudioError("no validation rows: add rows, raise val_ratio, or give validation: FILE")
    if main:
        save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    model, tok = load_base(cfg, task, ds.labels)
    if task == "generation":
        tr_enc = encode_generation(train_rows, tok, cfg.max_length)
        va_enc = encode_generation(val_rows, tok, cfg.max_length)
    else:
        tr_enc = encode_classification(train_rows, tok, ds.labels, cfg.max_length)
        va_enc = encode_classification(val_rows, tok, ds.labels, cfg.max_length)
    status = write_status if main else (lambda *a, **k: None)  # only rank 0 writes the run folder
    status(run_dir, state="running", pid=os.getpid(), task=task, error=None, processes=world,
           base_model=cfg.base_model or base_model_for(task), labels=ds.labels, rows=len(ds.rows),
           bad_rows=[{"line": n, "error": e} for n, e in ds.bad], train=len(train_rows), val=len(val_rows),
           truncated=tr_enc.truncated + va_enc.truncated, step=0)
    before = None
    if not resume and main:
        before, before_examples = evaluate(model, tok, task, val_rows, va_enc, ds.labels, cfg.eval_examples)
        (run_dir / "before.json").write_text(json.dumps({"metrics": before, "examples": before_examples}))
    peft_cfg = LoraConfig(task_type=TaskType.CAUSAL_LM if task == "generation" else TaskType.SEQ_CLS, r=cfg.r,
                          lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.target_modules or default_targets(model))
    model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    status(run_dir, trainable=trainable, total_params=total, trainable_share=round(trainable / total, 5))
    stop = {"signal": None}
    events = open(run_dir / "events.jsonl", "a") if main else open(os.devnull, "w")  # noqa: SIM115

    class Live(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 3)}
            if "loss" in logs:
                row.update(loss=round(logs["loss"], 5), lr=logs.get("learning_rate"))
            if "eval_loss" in logs:
                row["val_loss"] = round(logs["eval_loss"], 5)
            if len(row) > 2:
                events.write(json.dumps(row) + "\n")
                events.flush()
            status(run_dir, step=state.global_step, max_steps=state.max_steps)
            if progress and main:
                progress(state.global_step, state.max_steps, row)

        def on_step_end(self, args, state, control, **kw):
            if world > 1:  # every process stops at the same step, or the others would wait forever
                import torch.distributed as dist

                flag = torch.tensor([0 if stop["signal"] is None else 1])
                dist.all_reduce(flag)
                if flag.item() and stop["signal"] is None:
                    stop["signal"] = signal.SIGTERM
            if stop["signal"] is not None:
                control.should_save = True
                control.should_training_stop = True
            return control

    def on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, max_steps=cfg.steps, seed=cfg.seed,
        eval_strategy="steps", eval_steps=cfg.eval_every, save_strategy="steps", save_steps=cfg.eval_every,
        save_total_limit=2, load_best_model_at_end=bool(cfg.early_stopping), metric_for_best_model="eval_loss",
        greater_is_better=False, logging_steps=1, report_to=[], use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True, ddp_find_unused_parameters=False)
    callbacks = [Live()] + ([EarlyStoppingCallback(cfg.early_stopping)] if cfg.early_stopping else [])
    trainer = Trainer(model=model, args=args, train_dataset=_Rows(tr_enc, task), eval_dataset=_Rows(va_enc, task),
                      data_collator=_collate(tok.pad_token_id, task), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # our own progress line (and events.jsonl) report the logs
    try:
        ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(ckpts[-1]) if resume and ckpts else None)
        status(run_dir, train_seconds=round(time.perf_counter() - t0, 1))
        state = "cancelled" if stop["signal"] is not None else "finished"
        if not main:
            return {"state": state, "step": trainer.state.global_step}
        if state == "finished":  # a cancelled run was checkpointed by the Trainer at its last step
            early = trainer.state.global_step < trainer.state.max_steps
            model.save_pretrained(str(run_dir / "adapter"))
            tok.save_pretrained(str(run_dir / "adapter"))
            after, after_examples = evaluate(model, tok, task, val_rows, va_enc, ds.labels, cfg.eval_examples)
            before_doc = json.loads((run_dir / "before.json").read_text())
            examples = [{**b, "base_output": b.get("output", b.get("predicted")),
                         "tuned_output": a.get("output", a.get("predicted"))}
                        for b, a in zip(before_doc["examples"], after_examples, strict=False)]
            (run_dir / "metrics.json").write_text(json.dumps(
                {"before": before_doc["metrics"], "after": after, "early_stopped": early,
                 "best_step": _best_step(trainer)}, indent=1))
            (run_dir / "examples.json").write_text(json.dumps(examples, indent=1, ensure_ascii=False))
            if cfg.merge:
                model.merge_and_unload().save_pretrained(str(run_dir / "merged"))
                tok.save_pretrained(str(run_dir / "merged"))
        write_status(run_dir, state=state, step=trainer.state.global_step)
    except pickle.UnpicklingError:  # transformers reads checkpoints with weights_only=True
        error = ("a file in checkpoints/ holds objects other than tensors and numbers, so it was not loaded "
                 "(it may not come from this studio); start the run again instead of resuming it")
        status(run_dir, state="failed", error=error)
        raise StudioError(error) from None
    except BaseException as exc:
        status(run_dir, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        events.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return json.loads((run_dir / "status.json").read_text())


def _best_step(trainer) -> int | None:
    best = trainer.state.best_model_checkpoint
    return int(best.rsplit("-", 1)[1]) if best else None
