"""RAG and prompt-output metrics, each 0..1 and deterministic for a fixed model and seed.

RAG metrics as RAGAS defines them (Es et al., 2023), with the studio's groundedness scorer
standing in for the LLM where RAGAS asks one for a yes/no verdict:

- ``groundedness`` (RAGAS *faithfulness*): share of the answer's claims the retrieved context
  supports.
- ``answer_relevance``: mean cosine between the question and questions generated back from the
  answer by a chat model (``n`` of them). Without a chat model: the cosine between question and
  answer (MiniLM), named so in the report.
- ``context_precision`` (needs a reference answer): with v_k = 1 when retrieved chunk k supports
  part of the reference, ``sum_k precision@k * v_k / sum_k v_k``: relevant chunks ranked first score 1.
- ``context_recall`` (needs a reference answer): share of the reference's sentences that the
  retrieved context supports.

Prompt-output checks: ``exact``, ``contains``, ``regex``, ``numeric``, ``json_valid``,
``json_schema`` (from :mod:`eval.checks`) and ``rubric``: a chat model grades the answer against
a rubric on a 1-5 scale through a JSON schema, mapped to (score - 1) / 4.
"""

from __future__ import annotations

import json

import numpy as np

from eval.checks import CHECKS, check
from eval.groundedness import get_scorer
from studio.errors import StudioError

RAG_METRICS = ("groundedness", "answer_relevance", "context_precision", "context_recall")
PROMPT_METRICS = (*CHECKS, "rubric")
RUBRIC_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
                 "required": ["score"]}


def groundedness(answer: str, contexts: list[str], scorer: str = "judge") -> float:
    return get_scorer(scorer).score("\n\n".join(contexts), answer).score


def context_recall(reference: str, contexts: list[str], scorer: str = "judge") -> float:
    """Share of the reference answer's sentences supported by the retrieved context."""
    if not reference.strip():
        raise StudioError("context_recall needs a reference answer in the case")
    return get_scorer(scorer).score("\n\n".join(contexts), reference).score


def chunk_relevance(reference: str, contexts: list[str], scorer: str = "judge") -> list[int]:
    """v_k: 1 when chunk k supports at least one sentence of the reference."""
    judge = get_scorer(scorer)
    return [int(any(s.supported for s in judge.score(c, reference).sentences)) for c in contexts]


def context_precision(reference: str, contexts: list[str], scorer: str = "judge") -> float:
    if not reference.strip():
        raise StudioError("context_precision needs a reference answer in the case")
    v = chunk_relevance(reference, contexts, scorer)
    return average_precision(v)


def average_precision(relevant: list[int]) -> float:
    """sum_k precision@k * v_k / sum_k v_k (0 when nothing is relevant)."""
    hits, total = 0, 0.0
    for k, v in enumerate(relevant, 1):
        if v:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def answer_relevance(question: str, answer: str, embedder=None, backend=None, n: int = 3, seed: int = 0) -> float:
    """RAGAS answer relevance (with ``backend``) or question-answer cosine (without)."""
    if embedder is None:
        from ingest.embeddings import MiniLMEmbeddings

        embedder = MiniLMEmbeddings()
    if not answer.strip():
        return 0.0
    if backend is None:
        q, a = embedder.encode([question, answer])
        return max(0.0, float(q @ a))
    from studio.backends.base import GenerationSettings

    generated = []
    for i in range(n):
        messages = [{"role": "user", "content": f"Write one question that this answer answers.\n\nAnswer: {answer}"}]
        text = backend.complete(messages, GenerationSettings(temperature=0.7, max_tokens=48, seed=seed + i,
                                                             stop=["\n"])).text.strip()
        if text:
            generated.append(text)
    if not generated:
        return 0.0
    vecs = embedder.encode([question, *generated])
    return max(0.0, float(np.mean(vecs[1:] @ vecs[0])))


def rubric(question: str, answer: str, criteria: str, backend, seed: int = 0) -> float:
    """A chat model grades ``answer`` against ``criteria`` (1-5, JSON-constrained) -> (score-1)/4."""
    from studio.backends.base import GenerationSettings

    messages = [
        {"role": "system", "content": "You grade answers strictly. Reply in JSON with a score from 1 to 5."},
        {"role": "user", "content": f"Question: {question}\nAnswer: {answer}\nRubric: {criteria}\n"
                                    "How well does the answer meet the rubric (1 = not at all, 5 = fully)?"},
    ]
    text = backend.complete(messages, GenerationSettings(temperature=0, max_tokens=24, seed=seed,
                                                         json_schema=RUBRIC_SCHEMA)).text
    try:
        value = int(json.loads(text)["score"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StudioError(f"the rubric judge did not answer with a score ({text[:80]!r})") from exc
    return (min(5, max(1, value)) - 1) / 4


def prompt_check(kind: str, answer: str, expected, options: dict | None = None) -> float:
    return 1.0 if check(kind, answer, expected, **(options or {})) else 0.0




