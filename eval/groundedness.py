"""Groundedness (faithfulness): how much of an answer its context supports, sentence by sentence.

>>> r = score("R was designed by Ihaka and Gentleman in 1996.", "R was created in 1993 by Ihaka.")
>>> r.score, [(s.text, s.supported) for s in r.sentences]

The answer is split into claims (its sentences; citation markers dropped). Each claim gets a
probability of being supported by the context; the answer's score is the share of supported
claims, counted softly: ``score = mean_i p_i``. A claim counts as supported when ``p_i >= 0.5``.

Scorers (``get_scorer(name)``):

- ``judge`` (default): a logistic model over evidence features of the claim against the context:
  the rarity-weighted count of its words that its best two-sentence window lacks (a claim stitched
  from words scattered across a page is not supported), word and word-pair coverage of that
  window (a swapped relation breaks pairs), and negation disagreement with it. Its weights are
  fitted by ``train_judge`` (``studio eval calibrate --train``) on HaluEval training rows and
  synthetic document pairs and ship in ``eval/data/judge.json``. No model, ~400-2000 pairs/s.
- ``encoder``: the claim encoder (:mod:`eval.crossencoder`), a MiniLM cross-encoder trained here
  on (evidence, claim) pairs and shipped in ``eval/data/claim-encoder``: better on HaluEval
  dialogue and summarization, worse on paraphrased claims over real manuals; ~20-60 pairs/s.
- ``lexical``: share of the claim's content words found anywhere in the context (the baseline).
- ``embedding``: the best cosine between the claim and a context sentence (bundled MiniLM).
- ``nli:PATH``: a cross-encoder / NLI model from a local folder (sentence-transformers
  ``CrossEncoder``); the entailment probability of (evidence, claim).
- ``llm``: a chat model as judge, answering a JSON schema per claim (``{"supported": bool}``),
  so a small local model never returns something unparseable.

Benchmarks/groundedness.py measures them all next to the length-only, lexical and answer-only
baselines (README, Benchmarks).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from eval.crossencoder import ENCODER_DIR, ClaimEncoder
from eval.text import FEATURES, Context, claims, content_terms, features, words
from studio.backends import GenerationSettings, load_backend
from studio.errors import StudioError
from studio.registry import backend_for

JUDGE_FILE = Path(__file__).parent / "data" / "judge.json"
# what the judge uses: measured on the calibration sets, more features fitted worse (collinear, noisy labels)
JUDGE_FEATURES = ["window_novel_rarity", "negation_mismatch", "window_coverage", "window_pair_coverage"]


@dataclass
class SentenceScore:
    text: str
    score: float
    supported: bool
    evidence: str = ""


@dataclass
class Groundedness:
    score: float
    sentences: list[SentenceScore] = field(default_factory=list)
    scorer: str = "judge"

    @property
    def unsupported(self) -> list[str]:
        return [s.text for s in self.sentences if not s.supported]

    def to_dict(self) -> dict:
        return asdict(self)


class Scorer(ABC):
    """Scores claims against a context; subclasses implement :meth:`claim_scores`."""

    name = "base"

    @abstractmethod
    def claim_scores(self, claims_: list[str], ctx: Context) -> list[tuple[float, str]]:
        """(support probability, evidence text) for each claim."""

    def batch_scores(self, jobs: list[tuple[list[str], Context]]) -> list[list[tuple[float, str]]]:
        """:meth:`claim_scores` for many (claims, context) jobs; scorers that batch a model override it."""
        return [self.claim_scores(cl, ctx) for cl, ctx in jobs]

    def score(self, context: str, answer: str) -> Groundedness:
        return self.score_many([(context, answer)])[0]

    def score_many(self, items: list[tuple[str, str]]) -> list[Groundedness]:
        """Score ``(context, answer)`` items; an answer without claims scores 0 with no sentences."""
        split = [claims(answer) for _, answer in items]
        todo = [i for i, cl in enumerate(split) if cl]
        scored = dict(zip(todo, self.batch_scores([(split[i], Context(items[i][0])) for i in todo]), strict=True))
        out = []
        for i, cl in enumerate(split):
            if not cl:
                out.append(Groundedness(0.0, [], self.name))
                continue
            sentences = [SentenceScore(c, round(float(p), 4), bool(p >= 0.5), ev)
                         for c, (p, ev) in zip(cl, scored[i], strict=True)]
            out.append(Groundedness(round(float(np.mean([x.score for x in sentences])), 4), sentences, self.name))
        return out


class LexicalScorer(Scorer):
    name = "lexical"

    def claim_scores(self, claims_, ctx):
        out = []
        for c in claims_:
            f = features(c, ctx)
            out.append((f["coverage"], ctx.window(ctx.best_window(set(content_terms(words(c)))))[2]))
        return out


class JudgeScorer(Scorer):
    """Logistic regression over :data:`FEATURES`; weights from ``eval/data/judge.json``."""

    name = "judge"

    def __init__(self, path: Path | str = JUDGE_FILE):
        path = Path(path)
        if not path.is_file():
            raise StudioError(f"no judge weights at {path}; fit them with `studio eval calibrate --train`")
        spec = json.loads(path.read_text())
        self.keys = spec.get("features") or []
        if not self.keys or set(self.keys) - set(FEATURES):
            raise StudioError(f"{path} was fitted on other features; refit with `studio eval calibrate --train`")
        self.mean = np.array(spec["mean"])
        self.scale = np.array(spec["scale"])
        self.coef = np.array(spec["coef"])
        self.intercept = float(spec["intercept"])
        self.spec = spec

    def probability(self, rows: np.ndarray) -> np.ndarray:
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1 / (1 + np.exp(-z))

    def claim_scores(self, claims_, ctx):
        rows = np.array([[features(c, ctx)[k] for k in self.keys] for c in claims_])
        probs = self.probability(rows)
        return [(float(p), ctx.window(ctx.best_window(set(content_terms(words(c)))))[2])
                for p, c in zip(probs, claims_, strict=False)]


class EncoderScorer(Scorer):
    """The claim encoder (``eval.crossencoder``): sigmoid of its logit for (evidence, claim), batched
    over every claim of every answer; ``engine``: auto (ONNX Runtime when its export verifies), onnx or torch."""

    name = "encoder"

    def __init__(self, path: Path | str = ENCODER_DIR, engine: str = "auto"):
        self.encoder = ClaimEncoder(path, engine=engine)

    def claim_scores(self, claims_, ctx):
        return self.batch_scores([(claims_, ctx)])[0]

    def batch_scores(self, jobs):
        flat = [(ctx.evidence(c), c) for cl, ctx in jobs for c in cl]
        probs = (1 / (1 + np.exp(-np.array(self.encoder.logits(flat))))).tolist()
        scored = iter(zip(probs, (ev for ev, _ in flat), strict=True))
        return [[next(scored) for _ in cl] for cl, _ in jobs]


class EmbeddingScorer(Scorer):
    """Best cosine between the claim and any context sentence, mapped to 0..1 as max(0, cos)."""

    name = "embedding"

    def __init__(self, embedder=None):
        if embedder is None:
            from ingest.embeddings import MiniLMEmbeddings  # loads the model: only when asked for

            embedder = MiniLMEmbeddings()
        self.embedder = embedder

    def claim_scores(self, claims_, ctx):
        vecs = self.embedder.encode(claims_ + ctx.sentences)
        sims = vecs[: len(claims_)] @ vecs[len(claims_):].T
        return [(max(0.0, float(row.max())), ctx.sentences[int(row.argmax())]) for row in sims]


class NLIScorer(Scorer):
    """A local cross-encoder NLI model: P(entailment | evidence, claim); ``nli:eval/data/claim-encoder``
    is the judge's own claim encoder alone."""

    name = "nli"

    def __init__(self, path: str):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise StudioError(f"no NLI model folder at {folder}; give a local sentence-transformers CrossEncoder")
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(folder), device="cpu")
        labels = {v.lower(): k for k, v in (self.model.config.id2label or {}).items()}
        self.entail = labels.get("entailment", 1 if len(labels) == 3 else 0)

    def claim_scores(self, claims_, ctx):
        windows = [ctx.evidence(c) for c in claims_]
        logits = np.atleast_2d(self.model.predict(list(zip(windows, claims_, strict=False)), apply_softmax=False))
        if logits.shape[1] == 1:
            probs = 1 / (1 + np.exp(-logits[:, 0]))
        else:
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = (e / e.sum(axis=1, keepdims=True))[:, self.entail]
        return list(zip(probs.tolist(), windows, strict=False))


JUDGE_SCHEMA = {"type": "object", "properties": {"supported": {"type": "boolean"}}, "required": ["supported"]}


class LLMScorer(Scorer):
    """A chat model decides per claim, constrained to ``{"supported": true|false}``."""

    name = "llm"

    def __init__(self, backend=None):
        self.backend = backend or load_backend("llamacpp")

    def claim_scores(self, claims_, ctx):
        out = []
        for c in claims_:
            window = ctx.window(ctx.best_window(set(content_terms(words(c)))))[2]
            messages = [
                {"role": "system", "content": "You check whether a claim is stated by a passage. Answer in JSON."},
                {"role": "user", "content": f"Passage: {window}\n\nClaim: {c}\n\nDoes the passage state the claim?"},
            ]
            text = self.backend.complete(messages, GenerationSettings(temperature=0, max_tokens=16, seed=0,
                                                                      json_schema=JUDGE_SCHEMA)).text
            try:
                verdict = bool(json.loads(text).get("supported"))
            except (ValueError, AttributeError) as exc:  # a backend that ignores the schema
                raise StudioError(f"the judge model did not answer in JSON ({text[:80]!r})") from exc
            out.append((1.0 if verdict else 0.0, window))
        return out


SCORERS = ("judge", "encoder", "encoder:PATH", "lexical", "embedding", "llm", "llm:MODEL", "nli:PATH")


@lru_cache(maxsize=8)
def get_scorer(name: str = "judge") -> Scorer:
    """A scorer by name (cached): judge, encoder (the shipped one) or encoder:/path/to/folder, lexical,
    embedding, llm, nli:/path/to/model."""
    if name == "judge":
        return JudgeScorer()
    if name == "encoder":
        return EncoderScorer()
    if name.startswith("encoder:"):  # a retrained claim encoder (eval.training.train_encoder writes one)
        return EncoderScorer(name.removeprefix("encoder:"))
    if name == "lexical":
        return LexicalScorer()
    if name == "embedding":
        return EmbeddingScorer()
    if name == "llm":
        return LLMScorer()
    if name.startswith("llm:"):  # a chosen judge model: the Models tab's judge role, or any installed name
        model = name.removeprefix("llm:")
        return LLMScorer(load_backend(backend_for(model), model, **({"parallel": 1} if backend_for(model)
                                                                     == "llamacpp" else {})))
    if name.startswith("nli:"):
        return NLIScorer(name[4:])
    raise StudioError(f"unknown groundedness scorer {name!r}; choose one of: {', '.join(SCORERS)}")


def score(answer: str, context: str, scorer: str = "judge") -> Groundedness:
    return get_scorer(scorer).score(context, answer)
