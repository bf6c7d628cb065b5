"""Question-passage relevance: does this passage answer this question? A cross-encoder trained here.

The RAG chain's other evidence (cosine, term coverage, dense/BM25 agreement) says whether a passage is
*about* the question's topic. Near-miss questions ("which function makes a version-4 UUID?" asked of a
page on the uuid type) are about the topic and still unanswered, so the chain also asks a model that
reads the question and the passage together. It is the claim encoder's architecture (all-MiniLM-L6-v2
with a one-logit head, :mod:`eval.crossencoder` loads it), fine-tuned from the shipped claim encoder on
(passage, question) pairs made without any development-set question (``eval.devsets``):

- HaluEval QA training rows (from row 5000): the row's knowledge answers its question (1); the same
  knowledge with the sentences that hold the answer removed (0: same topic, no answer, the near miss);
  the most similar other row's knowledge by BM25 (0);
- the Python FAQ (``python3-doc``'s ``faq/`` pages, not in any development corpus), whose headings
  are real questions: the first sentences of the section under a question (1), a window of another
  section of the same page (0) and, in the answered section, later windows do not count either way.

:func:`train` writes a folder like the claim encoder's (``training.json`` holds the resolved config).

It is not shipped and the chain does not use it: ``benchmarks/rag_relevance.py`` measured it (README,
"Question-passage relevance"): as a reranker it changed recall@4 on no tuning half; as a sixth
answerability feature it lifted the pooled tuning AUROC only from 0.893 (best single feature) to 0.904
and left the Python reporting half's refusals at 0.62, which does not pay for 45 MB and about a
second of cross-encoding per question.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from eval.data import TRAIN_OFFSET, halueval_dir

FAQ_DIR = Path("/usr/share/doc/python3-doc/html/faq")
_GLUED = re.compile(r"(?<=[a-z0-9)\]\"'])\.(?=[A-Z])")  # HaluEval glues its paragraphs: "century.First"


@dataclass
class RelevanceConfig:
    seed: int = 0
    qa_rows: int = 3000
    faq_repeat: int = 3  # the FAQ pairs are few and in the documentation domain: seen this many times
    window: int = 3  # sentences per passage window (the chain scores windows of this size)
    max_length: int = 160
    batch_size: int = 16
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    epochs: int = 1


def _sentences(text: str) -> list[str]:
    from ingest.splitters import split_sentences

    return [s for s in split_sentences(_GLUED.sub(". ", text)) if len(s) > 3]


def halueval_examples(cfg: RelevanceConfig, rng: random.Random) -> list[tuple[str, str, int]]:
    from studio.rag.bm25 import BM25Index

    rows = []
    with open(halueval_dir() / "dataset_halueval_qa.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= TRAIN_OFFSET + cfg.qa_rows:
                break
            if i >= TRAIN_OFFSET:
                rows.append(json.loads(line))
    knowledge = [" ".join(_sentences(r["knowledge"])) for r in rows]
    index = BM25Index(knowledge)
    out = []
    for i, r in enumerate(rows):
        question, answer = r["question"], r["right_answer"].strip().lower()
        out.append((knowledge[i], question, 1))
        sents = _sentences(r["knowledge"])
        if answer and answer not in ("yes", "no"):
            kept = [s for s in sents if answer not in s.lower()]
            if kept and len(kept) < len(sents):
                out.append((" ".join(kept), question, 0))
        other = next((d for d, _ in index.search(question, 3) if d != i), None)
        if other is not None and rows[other]["right_answer"].strip().lower() not in knowledge[i].lower():
            out.append((knowledge[other], question, 0))
    return out


def faq_examples(cfg: RelevanceConfig, rng: random.Random, folder: Path = FAQ_DIR) -> list[tuple[str, str, int]]:
    from ingest.structure import html_sections

    out = []
    for page in sorted(folder.glob("*.html")):
        _, sections = html_sections(page.read_text(encoding="utf-8", errors="replace"))
        windows = []  # (section index, window text) of every section
        for k, s in enumerate(sections):
            body = "\n".join(line for line in s.text.splitlines() if line.strip() not in s.path)
            sents = _sentences(body)  # the heading itself left out: the passage must answer, not repeat
            windows += [(k, " ".join(sents[j:j + cfg.window])) for j in range(0, len(sents), cfg.window)]
        for k, s in enumerate(sections):
            heading = s.path[-1] if s.path else ""
            if not heading.endswith("?"):
                continue
            mine = [w for j, w in windows if j == k]
            others = [w for j, w in windows if j != k]
            if not mine or not others:
                continue
            out += [(mine[0], heading, 1), (rng.choice(others), heading, 0)]
    return out


def relevance_examples(cfg: RelevanceConfig) -> list[tuple[str, str, int]]:
    """(passage, question, label) examples, shuffled with ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    examples = halueval_examples(cfg, rng) + faq_examples(cfg, rng) * cfg.faq_repeat
    rng.shuffle(examples)
    return examples





def train(out: Path, cfg: RelevanceConfig | None = None, progress=None) -> dict:
    """Fine-tune the relevance encoder from the shipped claim encoder; ``info["out"]`` says where it went."""
    from eval.crossencoder import ENCODER_DIR
    from eval.training import fine_tune

    cfg = cfg or RelevanceConfig()
    info = fine_tune(relevance_examples(cfg), Path(out), str(ENCODER_DIR), cfg, progress,
                     base_name="the shipped claim encoder (eval/data/claim-encoder)")
    return {**info, "out": str(out)}
