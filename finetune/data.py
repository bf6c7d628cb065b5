"""Fine-tuning data: chat or instruction JSONL for generation, text/label CSV or JSONL for classification.

>>> ds = load_dataset("data/train.jsonl")                    # rows kept, bad rows with line numbers
>>> ds.task, len(ds.rows), ds.bad                             # "generation", 200, [(7, "no output")]
>>> enc = encode_generation(ds.rows, tokenizer, max_length=256)
>>> enc.truncated                                             # examples cut to max_length

Generation rows: ``{"messages": [{"role", "content"}, ...]}`` whose last message is the
assistant's (rendered with the model's own chat template), or ``{"instruction", "input"?,
"output"}`` (turned into a user and an assistant message). Only the assistant's reply is learned:
the prompt's tokens get label -100.

Classification rows: ``text`` and ``label`` (CSV with a header, or JSONL). Labels are names or
integers; they are mapped to ids in sorted order.

A malformed row (bad JSON, a missing field, an empty reply) is reported with its line number and
left out; the good rows are kept.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.limits import current as current_limits

IGNORE = -100


@dataclass
class Dataset:
    path: str
    task: str  # generation | classification
    rows: list[dict]
    bad: list[tuple[int, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def split(self, val_ratio: float = 0.1, seed: int = 0) -> tuple[list[dict], list[dict]]:
        """(train, validation): a seeded shuffle, at least one row in each when there are two or more."""
        rows = list(self.rows)
        random.Random(seed).shuffle(rows)
        n_val = max(1, round(len(rows) * val_ratio)) if len(rows) > 1 and val_ratio > 0 else 0
        return rows[n_val:], rows[:n_val]

    def report(self) -> dict:
        return {"path": self.path, "task": self.task, "rows": len(self.rows), "labels": self.labels,
                "bad": [{"line": n, "error": e} for n, e in self.bad]}


def _generation_row(obj: dict) -> tuple[dict | None, str | None]:
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            return None, "messages must be a non-empty list"
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                return None, "each message needs a role (system, user, assistant) and a content string"
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            return None, "the last message must be the assistant's (non-empty) reply"
        return {"messages": msgs}, None
    if "instruction" in obj or "output" in obj:
        instruction, output = obj.get("instruction"), obj.get("output")
        if not isinstance(instruction, str) or not instruction.strip():
            return None, "no instruction"
        if not isinstance(output, str) or not output.strip():
            return None, "no output"
        user = instruction.strip() + (f"\n\n{obj['input'].strip()}" if str(obj.get("input") or "").strip() else "")
        reply = {"role": "assistant", "content": output.strip()}
        return {"messages": [{"role": "user", "content": user}, reply]}, None
    return None, "expected messages, or instruction and output"


def _classification_row(obj: dict) -> tuple[dict | None, str | None]:
    text, label = obj.get("text"), obj.get("label")
    if not isinstance(text, str) or not text.strip():
        return None, "no text"
    if label is None or str(label).strip() == "":
        return None, "no label"
    return {"text": text.strip(), "label": str(label).strip()}, None


def load_dataset(path: str | Path, task: str | None = None) -> Dataset:
    """Read a JSONL or CSV file; ``task`` (generation | classification) is detected when not given."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"dataset {path.name} not found")
    most = current_limits().data_mb
    if path.stat().st_size > most * 1e6:
        raise StudioError(f"dataset {path.name} is {path.stat().st_size / 1e6:,.0f} MB; the limit is {most:g} MB "
                          "(limits.data_mb)")
    raw: list[tuple[int, dict | None, str | None]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise StudioError(f"{path}: a CSV needs a header with text and label columns "
                                  f"(found {', '.join(reader.fieldnames or []) or 'none'})")
            for row in reader:
                raw.append((reader.line_num, dict(row), None))
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raw.append((n, None, f"not JSON ({exc.msg})"))
                continue
            raw.append((n, obj, None) if isinstance(obj, dict) else (n, None, "not a JSON object"))
    if task is None:
        first = next((o for _, o, _ in raw if o), {})
        task = "classification" if "text" in first and "label" in first else "generation"
    if task not in ("generation", "classification"):
        raise StudioError(f"task must be generation or classification, not {task!r}")
    parse = _generation_row if task == "generation" else _classification_row
    rows, bad = [], []
    for n, obj, err in raw:
        if err is None:
            row, err = parse(obj)
            if row is not None:
                rows.append(row)
                continue
        bad.append((n, err))
    if not rows:
        detail = f"; first problem, line {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise StudioError(f"{path} has no usable {task} rows{detail}")
    labels = sorted({r["label"] for r in rows}) if task == "classification" else []
    if task == "classification" and len(labels) < 2:
        raise StudioError(f"{path}: classification needs at least two labels, found {labels}")
    return Dataset(str(path), task, rows, bad, labels)


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list  # token labels (generation) or class ids (classification)
    truncated: int = 0


def encode_generation(rows: list[dict], tokenizer, max_length: int = 256) -> Encoded:
    """Chat-template the rows; labels are -100 on the prompt so only the reply is learned."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise StudioError("this tokenizer has no chat template; use an instruct/chat model")
    ids, labels, cut = [], [], 0
    for r in rows:
        msgs = r["messages"]
        full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
        full, prompt = list(full), list(prompt)
        lab = [IGNORE] * len(prompt) + full[len(prompt):]
        if len(full) > max_length:
            cut += 1
            full, lab = full[:max_length], lab[:max_length]
        ids.append(full)
        labels.append(lab)
    return Encoded(ids, labels, cut)


def encode_classification(rows: list[dict], tokenizer, labels: list[str], max_length: int = 128) -> Encoded:
    index = {name: i for i, name in enumerate(labels)}
    ids, ys, cut = [], [], 0
    for r in rows:
        if r["label"] not in index:
            raise StudioError(f"label {r['label']!r} is not one of {labels}")
        enc = tokenizer(r["text"], truncation=False)["input_ids"]
        if len(enc) > max_length:
            cut += 1
            enc = enc[: max_length - 1] + [enc[-1]]  # keep the closing special token
        ids.append(enc)
        ys.append(index[r["label"]])
    return Encoded(ids, ys, cut)


def preview(enc: Encoded, tokenizer, n: int = 3) -> list[dict]:
    """The first ``n`` encoded examples as text, with the part that is learned shown separately."""
    out = []
    for ids, lab in list(zip(enc.input_ids, enc.labels, strict=True))[:n]:
        item = {"tokens": len(ids), "text": tokenizer.decode(ids)}
        if isinstance(lab, list):
            item["learned"] = tokenizer.decode([t for t in lab if t != IGNORE])
        else:
            item["label"] = lab
        out.append(item)
    return out
