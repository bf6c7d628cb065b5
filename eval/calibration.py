"""Calibration: how well a groundedness scorer separates supported from unsupported answers.

Every figure comes with two baselines: answer length alone (longer = less supported) and
lexical overlap, because on HaluEval QA length alone reaches AUROC 0.97 (the labelled sets:
:mod:`eval.data`). An answer-only classifier that never sees the context is a third baseline on
HaluEval, and :func:`context_swap_auroc` checks that a scorer reads the context at all.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from eval.data import TRAIN_OFFSET, Pair, halueval, load_set
from eval.groundedness import LexicalScorer
from eval.text import words
from studio.errors import StudioError


def auroc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn's): the probability that a supported answer outscores an
    unsupported one, ties counting 1/2."""
    y = np.asarray(labels)
    if not (y == 1).any() or not (y == 0).any():
        raise StudioError("AUROC needs both supported and unsupported examples")
    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))


def length_score(pair: Pair) -> float:
    """The length-only baseline: shorter answers score higher."""
    return -float(len(words(pair.answer)))


def answer_only_auroc(name: str, n: int = 1000, train_rows: int = 5000) -> float | None:
    """The answer-only baseline: a word n-gram classifier that never sees the context, fitted on
    HaluEval training rows of the same task. What it reaches is separable by the answers' style alone."""
    if not name.startswith("halueval-"):
        return None
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    task = name.removeprefix("halueval-")
    train, test = halueval(task, train_rows, offset=TRAIN_OFFSET), halueval(task, n)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LogisticRegression(max_iter=3000).fit(vec.fit_transform([p.answer for p in train]),
                                                  [p.label for p in train])
    scores = model.predict_proba(vec.transform([p.answer for p in test]))[:, 1]
    return round(auroc([p.label for p in test], scores), 4)


def context_swap_auroc(scorer, name: str, n: int = 300) -> float | None:
    """Does the scorer read the context? AUROC of the supported answers scored against their own
    context vs. against another row's (same words, now unsupported). 0.5: it ignores the context."""
    pairs = [p for p in load_set(name, n) if p.label == 1]
    if len(pairs) < 2:
        return None
    swapped = [Pair(pairs[(i + 7) % len(pairs)].context, p.answer, 0) for i, p in enumerate(pairs)
               if pairs[(i + 7) % len(pairs)].context != p.context]
    scores = [g.score for g in scorer.score_many([(p.context, p.answer) for p in pairs + swapped])]
    return round(auroc([1] * len(pairs) + [0] * len(swapped), scores), 4)


def calibrate(scorer, pairs: list[Pair]) -> dict:
    """AUROC and accuracy (threshold 0.5) of ``scorer`` on ``pairs``, with the two baselines."""
    t0 = time.perf_counter()
    ours = [r.score for r in scorer.score_many([(p.context, p.answer) for p in pairs])]
    seconds = time.perf_counter() - t0
    labels = [p.label for p in pairs]
    lexical = [r.score for r in LexicalScorer().score_many([(p.context, p.answer) for p in pairs])]
    return {
        "pairs": len(pairs),
        "auroc": round(auroc(labels, ours), 4),
        "accuracy": round(float(np.mean([(s >= 0.5) == bool(y) for s, y in zip(ours, labels, strict=False)])), 4),
        "length_auroc": round(auroc(labels, [length_score(p) for p in pairs]), 4),
        "lexical_auroc": round(auroc(labels, lexical), 4),
        "pairs_per_second": round(len(pairs) / seconds, 1) if seconds else None,
    }
