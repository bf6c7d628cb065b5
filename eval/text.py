"""Claims and their evidence as the groundedness scorers read them: words, content terms, rarity,
the answer split into claims, a context prepared once (:class:`Context`) and the evidence features
of a claim against it (:func:`features`).

Shared by the scorers (:mod:`eval.groundedness`), the data sets and synthetic pairs
(:mod:`eval.data`) and training (:mod:`eval.training`); stopwords come from :mod:`studio.text`, the
list the retriever uses.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from functools import lru_cache
from pathlib import Path

from ingest.splitters import split_sentences
from studio.text import STOPWORDS

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
