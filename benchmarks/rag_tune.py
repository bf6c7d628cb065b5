"""Fit the answerability model on the tuning halves of the RAG development sets (never the reporting halves).

For every question of the ``tune`` half of each corpus in ``eval.devsets`` (answerable: label 1,
unanswerable: label 0) the chain's evidence is gathered exactly as at answer time
(:meth:`studio.rag.chain.RagChain.assess`); scikit-learn's LogisticRegression (standardised
features, balanced classes) is fitted on all corpora together, and one threshold is chosen: the one
that refuses the most unanswerable tuning questions while wrongly refusing at most ``--max-wrong``
of the answerable ones, pooled over corpora. Written to ``studio/rag/answerability.json``.

    .venv/bin/python benchmarks/rag_tune.py [--home DIR] [--max-wrong 0.06]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "studio" / "rag" / "answerability.json"


def evidence_rows(ingestor, split: str) -> list[dict]:
    from eval.devsets import CORPORA
    from studio.rag.chain import RagChain, RagConfig
    from studio.rag.retriever import Retriever

    rows = []
    for name, corpus in CORPORA.items():
        if name not in ingestor.store.list_collections():
            ingestor.ingest(corpus.files(), name)
        chain = RagChain(Retriever(ingestor, name), None, RagConfig(style="extractive"))
        for label, qs in ((1, corpus.questions(split)), (0, corpus.unanswerable(split))):
            for q in qs:
                hits, _, evidence, _ = chain.assess(q["q"])
                rows.append({"corpus": name, "label": label, "q": q["q"], "x": evidence.vector()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="a STUDIO_HOME holding (or to hold) the corpora's collections")
    ap.add_argument("--max-wrong", type=float, default=0.06, help="wrong refusals allowed on the tuning halves")
    args = ap.parse_args()
    os.environ["STUDIO_HOME"] = args.home or tempfile.mkdtemp(prefix="rag-tune-")
    from studio.env import apply_offline_defaults

    apply_offline_defaults()
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ingest.pipeline import Ingestor
    from studio.rag.answerability import FEATURES

    if not OUT.exists():  # a first fit: assess() needs some model to run; its probabilities are not used here
        OUT.write_text(json.dumps({"mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
                                   "coef": [0.0] * len(FEATURES), "intercept": 0.0, "threshold": 0.5}))
    rows = evidence_rows(Ingestor(), "tune")
    x = np.array([r["x"] for r in rows], dtype=float)
    y = np.array([r["label"] for r in rows])
    mean, scale = x.mean(0), x.std(0) + 1e-9
    fit = LogisticRegression(class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    p = fit.predict_proba((x - mean) / scale)[:, 1]
    best = (0.0, -1.0)
    for t in np.round(np.arange(0.02, 0.98, 0.01), 2):
        if np.mean(p[y == 1] < t) <= args.max_wrong and np.mean(p[y == 0] < t) > best[1]:
            best = (float(t), float(np.mean(p[y == 0] < t)))
    model = {"features": list(FEATURES), "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
             "coef": fit.coef_[0].round(6).tolist(), "intercept": round(float(fit.intercept_[0]), 6),
             "threshold": best[0], "fitted_on": "tuning halves of " + ", ".join(sorted({r["corpus"] for r in rows})),
             "questions": len(rows), "date": datetime.date.today().isoformat()}
    OUT.write_text(json.dumps(model, indent=1) + "\n")
    print(json.dumps(model, indent=1))
    for name in sorted({r["corpus"] for r in rows}):
        m = np.array([r["corpus"] == name for r in rows])
        print(f"{name}: refusals {np.mean(p[m & (y == 0)] < best[0]):.2f}, "
              f"wrong refusals {np.mean(p[m & (y == 1)] < best[0]):.2f} (tuning half)")


if __name__ == "__main__":
    main()
