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
- ``encoder``: the claim encoder (``eval.crossencoder``), a MiniLM cross-encoder trained here
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

import gzip
import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ingest.splitters import split_sentences
from studio.errors import StudioError
from studio.rag.bm25 import STOPWORDS

JUDGE_FILE = Path(__file__).parent / "data" / "judge.json"
ENCODER_DIR = Path(__file__).parent / "data" / "claim-encoder"  # the trained claim encoder (eval.crossencoder)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.'-]*[A-Za-z0-9]|[A-Za-z0-9]")
_GLUE_CASE = re.compile(r"([a-z)])([A-Z])")
_GLUE_DOT = re.compile(r"([a-z]{2})\.([A-Z])")
_CITE = re.compile(r"\s*\[\d{1,2}\]")
_LEAD_IN = re.compile(r"^(?:the )?(?:short )?(?:answer|reason)(?: to (?:this|the|your) question)? (?:is|was)\s*:?\s*",
                      re.IGNORECASE)
NEGATIONS = frozenset("not no never none nobody nothing neither nor without cannot false".split())
FILLER = frozenset("""also yes yeah oh well like know think really get got would could much many lot sure
just one ones thing things way actually definitely""".split())
FEATURES = ["coverage", "log_novel", "novel_names", "name_precision", "pair_coverage", "window_coverage",
            "window_pair_coverage", "negation_mismatch", "log_window_novel", "novel_rarity", "window_novel_rarity",
            "max_novel_rarity"]
# what the judge uses: measured on the calibration sets, more features fitted worse (collinear, noisy labels)
JUDGE_FEATURES = ["window_novel_rarity", "negation_mismatch", "window_coverage", "window_pair_coverage"]


EVIDENCE_WORDS = 80  # what the claim encoder reads of the context per claim (it was trained with this)
_SUFFIXES = ("ations", "ation", "ions", "ion", "ings", "ing", "ed", "es", "s", "ly")


def _stem(word: str) -> str:
    """A crude stem good enough to match word forms: a suffix dropped, then the first 6 letters."""
    if any(c.isdigit() for c in word) or "." in word or "_" in word:
        return word
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:6]


@lru_cache(maxsize=1)
def _df() -> tuple[int, dict[str, int]]:
    with gzip.open(Path(__file__).parent / "data" / "word_df.json.gz", "rt") as fh:
        data = json.load(fh)
    return data["documents"], data["df"]


def idf(word: str) -> float:
    """Rarity of a word in general English text (news and Wikipedia; unknown words are rarest)."""
    n, df = _df()
    return math.log((n + 1) / (df.get(word.lower(), 0) + 1))


def unglue(text: str) -> str:
    """Put back the spaces lost between joined records ("Jr.Robert", "TurboTurbo", "RememberA Walk")."""
    return _GLUE_DOT.sub(r"\1. \2", _GLUE_CASE.sub(r"\1 \2", text))


def words(text: str) -> list[str]:
    return _WORD.findall(unglue(text.replace("\u2019", "'")))


def content_terms(ws: list[str]) -> list[str]:
    """Lower-cased, lightly stemmed words that carry content (no stopwords, fillers, or contractions)."""
    return [_stem(w) for w in content_words(ws)]


def content_words(ws: list[str]) -> list[str]:
    """The lower-cased words of ``ws`` that carry content."""
    out = []
    for w in ws:
        low = w.lower().strip(".'")
        if not low or low.endswith("n't") or low in STOPWORDS or low in FILLER or (len(low) < 2 and not low.isdigit()):
            continue
        out.append(low)
    return out


def name_terms(ws: list[str]) -> list[str]:
    """Numbers and capitalised words past the first (names, titles, versions)."""
    return [_stem(w.lower().strip(".'")) for i, w in enumerate(ws)
            if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper() and w.lower() not in STOPWORDS)]


def negated(ws: list[str]) -> bool:
    return any(w.lower() in NEGATIONS or w.lower().endswith("n't") for w in ws)


def claims(answer: str) -> list[str]:
    """The answer's sentences that carry content: citation markers and lead-ins ("The answer is:") removed."""
    out = []
    for s in split_sentences(_CITE.sub("", answer)):
        s = _LEAD_IN.sub("", s).strip()
        if s.endswith(":") or not content_terms(words(s)):
            continue  # a lead-in ("From the documents:") claims nothing
        out.append(s)
    return out


class Context:
    """A context prepared once for scoring many claims: sentences, their terms and word pairs."""

    def __init__(self, text: str):
        self.text = text
        self.sentences = split_sentences(unglue(text)) or [""]
        self.terms = [content_terms(words(s)) for s in self.sentences]
        self.sets = [set(t) for t in self.terms]
        self.pairs_of = [set(zip(t, t[1:], strict=False)) for t in self.terms]
        self.all_terms = set().union(*self.sets)
        self.all_pairs = set().union(*self.pairs_of)
        self.negated = [negated(words(s)) for s in self.sentences]

    def best_window(self, terms: set[str]) -> int:
        """Index of the sentence starting the two-sentence window that covers most of ``terms``."""
        best, at = -1.0, 0
        for i in range(len(self.sets)):
            window = self.sets[i] | (self.sets[i + 1] if i + 1 < len(self.sets) else set())
            c = len(terms & window)
            if c > best:
                best, at = c, i
        return at

    def evidence(self, claim: str, budget: int = EVIDENCE_WORDS) -> str:
        """The context sentences sharing the most rare words with ``claim``, best first, up to ``budget`` words
        (best first, so that a model reading only its first tokens still sees the closest sentence)."""
        terms = set(content_terms(words(claim)))
        # summed in sorted order: set order changes between processes, and so would near-ties
        weight = [round(sum(idf(t) for t in sorted(s & terms)), 9) for s in self.sets]
        ranked = sorted(((w, -i, i) for i, w in enumerate(weight)), reverse=True)
        chosen, used = [], 0
        for _, _, i in ranked:
            n = len(self.sentences[i].split())
            if chosen and used + n > budget:
                continue
            chosen.append(i)
            used += n
            if used >= budget:
                break
        return " ".join(self.sentences[i] for i in chosen)

    def window(self, i: int) -> tuple[set[str], set[tuple[str, str]], str]:
        j = min(i + 2, len(self.sets))
        return (set().union(*self.sets[i:j]), set().union(*self.pairs_of[i:j]), " ".join(self.sentences[i:j]))


def features(claim: str, ctx: Context) -> dict[str, float]:
    ws = words(claim)
    raw = content_words(ws)
    if not raw:
        return dict.fromkeys(FEATURES, 0.0)
    terms = [_stem(w) for w in raw]
    names = name_terms(ws)
    pairs = list(zip(terms, terms[1:], strict=False))
    wi = ctx.best_window(set(terms))
    wterms, wpairs, _ = ctx.window(wi)
    novel = [w for w, t in zip(raw, terms, strict=False) if t not in ctx.all_terms]
    window_novel = [w for w, t in zip(raw, terms, strict=False) if t not in wterms]
    wneg = any(ctx.negated[wi:wi + 2])
    return {
        "coverage": 1 - len(novel) / len(terms),
        "log_novel": math.log1p(len(novel)),
        "novel_names": float(sum(n not in ctx.all_terms for n in names)),
        "name_precision": sum(n in ctx.all_terms for n in names) / len(names) if names else 1.0,
        "pair_coverage": sum(p in ctx.all_pairs for p in pairs) / len(pairs) if pairs else 1 - len(novel) / len(terms),
        "window_coverage": 1 - len(window_novel) / len(terms),
        "window_pair_coverage": (sum(p in wpairs for p in pairs) / len(pairs) if pairs
                                 else 1 - len(window_novel) / len(terms)),
        "negation_mismatch": float(negated(ws) != wneg),
        "log_window_novel": math.log1p(len(window_novel)),
        "novel_rarity": sum(idf(w) for w in novel),
        "window_novel_rarity": sum(idf(w) for w in window_novel),
        "max_novel_rarity": max((idf(w) for w in novel), default=0.0),
    }


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
        from eval.crossencoder import ClaimEncoder

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
            from ingest.embeddings import MiniLMEmbeddings
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
        if backend is None:
            from studio.backends import load_backend
            backend = load_backend("llamacpp")
        self.backend = backend

    def claim_scores(self, claims_, ctx):
        from studio.backends.base import GenerationSettings

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


SCORERS = ("judge", "encoder", "lexical", "embedding", "llm", "nli:PATH")


@lru_cache(maxsize=8)
def get_scorer(name: str = "judge") -> Scorer:
    """A scorer by name (cached): judge, encoder, lexical, embedding, llm, nli:/path/to/model."""
    if name == "judge":
        return JudgeScorer()
    if name == "encoder":
        return EncoderScorer()
    if name == "lexical":
        return LexicalScorer()
    if name == "embedding":
        return EmbeddingScorer()
    if name == "llm":
        return LLMScorer()
    if name.startswith("nli:"):
        return NLIScorer(name[4:])
    raise StudioError(f"unknown groundedness scorer {name!r}; choose one of: {', '.join(SCORERS)}")


def score(answer: str, context: str, scorer: str = "judge") -> Groundedness:
    return get_scorer(scorer).score(context, answer)
