"""Does a question-passage relevance cross-encoder pay? Reranking, answerability, and the sentence check.

Issue 20 asked to measure a reranking step (the claim encoder retrained as a question-passage
relevance model, :mod:`eval.relevance`) and keep it only if it pays. This script measures, on the
RAG development sets (``eval.devsets``; tuning and reporting halves printed apart):

1. **Reranking**: recall@4 (the chain passes 4 chunks) of the hybrid retriever's fused order against
   the top 6 or 8 candidates reordered by their best sentence window's relevance (alone, or mixed
   half and half with the fused rank).
2. **Answerability**: AUROC (answerable vs. unanswerable) of each evidence feature and of the
   relevance of the best window; then the logistic model refitted on the tuning halves with and
   without the relevance feature, its threshold chosen there (wrong refusals <= 6%), and its refusals
   and wrong refusals on each reporting half.
3. **The hybrid answer's sentence check** on the hand-written claim pairs over the R manuals
   (``benchmarks/data/r_manuals_claim_pairs.jsonl``: a correct restatement and a one-fact change of
   the same sentence): how often a correct sentence is marked unsupported, and how often a wrong one
   is let through, for each offline scorer.

    .venv/bin/python benchmarks/rag_relevance.py --home DIR [--encoder FOLDER | --train FOLDER] [--skip-rag]

``--train`` fine-tunes the relevance encoder first (about 25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace


def candidates(ingestor, k: int = 12) -> list[dict]:
    """Every development question with the fused top ``k`` and the chain's sentence windows of them."""
    from eval.devsets import CORPORA, right_place
    from studio.rag import answerability
    from studio.rag.chain import RagChain, RagConfig
    from studio.rag.retriever import Retriever

    rows = []
    for name, corpus in CORPORA.items():
        if name not in ingestor.store.list_collections():
            ingestor.ingest(corpus.files(), name)
        chain = RagChain(Retriever(ingestor, name), None, RagConfig(style="extractive"))
        wide = replace(chain.retriever.cfg, k=k)
        passed = chain.retriever.cfg.k
        for label, qs in ((1, corpus.questions()), (0, corpus.unanswerable())):
            for q in qs:
                found = chain.retriever.search(q["q"], None, wide)
                windows, cosines = chain.windows(q["q"], found.hits, found.query_vector)
                ev = answerability.gather(q["q"], found.hits[:passed], found.dense_ids[:passed],
                                          found.bm25_ids[:passed], chain.retriever.corpus().index,
                                          max((float(c) for (n, _), c in zip(windows, cosines, strict=True)
                                               if n <= passed), default=0.0))
                rows.append({"corpus": name, "split": q["split"], "label": label, "q": q["q"], "passed": passed,
                             "right": [bool(label) and right_place(h.source, h.page, h.headers, q)
                                       for h in found.hits],
                             "windows": [(n, w) for n, w in windows if n <= 8], "x": ev.vector()})
    return rows


def relevance(rows: list[dict], folder: str) -> None:
    from eval.crossencoder import ClaimEncoder

    logits = ClaimEncoder(folder).logits([(w, r["q"]) for r in rows for _, w in r["windows"]])
    at = 0
    for r in rows:
        r["rel"] = logits[at:at + len(r["windows"])]
        at += len(r["windows"])
        best = {}
        for (n, _), x in zip(r["windows"], r["rel"], strict=True):
            best[n] = max(best.get(n, -99.0), x)
        r["best"] = best
        r["rel_top"] = max((best[n] for n in best if n <= r["passed"]), default=-10.0)


def rerank_table(rows: list[dict]) -> None:
    import numpy as np

    print("\n1. reranking: recall@4, fused order vs reordered by window relevance (mix: share of relevance)")
    for name in ("rman", "pgdoc", "pylib"):
        for split in ("tune", "report"):
            sel = [r for r in rows if r["corpus"] == name and r["split"] == split and r["label"]]
            line = f"   {name:6} {split:6} fused {np.mean([any(r['right'][:4]) for r in sel]):.2f}"
            for k in (6, 8):
                for mix in (0.5, 1.0):
                    hits = []
                    for r in sel:
                        n = min(k, len(r["right"]))
                        score = np.array([mix * r["best"].get(i + 1, -10.0) - (1 - mix) * (i + 1) for i in range(n)])
                        hits.append(any(r["right"][i] for i in np.argsort(-score, kind="stable")[:4]))
                    line += f" | top{k} mix {mix}: {np.mean(hits):.2f}"
            print(line)


def answerability_table(rows: list[dict]) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from studio.rag.answerability import FEATURES

    print("\n2. answerability: AUROC of each piece of evidence (answerable vs. unanswerable)")
    for split in ("tune", "report"):
        for name in ("rman", "pgdoc", "pylib", "all"):
            sel = [r for r in rows if r["split"] == split and name in ("all", r["corpus"])]
            y = [r["label"] for r in sel]
            aucs = [f"{f} {roc_auc_score(y, [r['x'][i] for r in sel]):.3f}" for i, f in enumerate(FEATURES)]
            rel = roc_auc_score(y, [r["rel_top"] for r in sel])
            print(f"   {name:6} {split:6} " + ", ".join(aucs) + f", relevance {rel:.3f}")
    print("   the model refitted on the tuning halves (threshold there: wrong refusals <= 6%), reporting halves:")
    tune = [r for r in rows if r["split"] == "tune"]
    report = [r for r in rows if r["split"] == "report"]
    for extra in (False, True):
        def x_of(rs, extra=extra):
            return np.array([r["x"] + ([r["rel_top"]] if extra else []) for r in rs], dtype=float)
        x, y = x_of(tune), np.array([r["label"] for r in tune])
        mu, sd = x.mean(0), x.std(0) + 1e-9
        fit = LogisticRegression(class_weight="balanced", max_iter=1000).fit((x - mu) / sd, y)
        p = fit.predict_proba((x - mu) / sd)[:, 1]
        t = max((t for t in np.arange(0.02, 0.98, 0.01) if np.mean(p[y == 1] < t) <= 0.06), default=0.02)
        pr = fit.predict_proba((x_of(report) - mu) / sd)[:, 1]
        parts = []
        for name in ("rman", "pgdoc", "pylib"):
            m = np.array([r["corpus"] == name for r in report])
            yr = np.array([r["label"] for r in report])
            parts.append(f"{name} refusals {np.mean(pr[m & (yr == 0)] < t):.2f} "
                         f"wrong {np.mean(pr[m & (yr == 1)] < t):.2f}")
        print(f"   {'with' if extra else 'without'} relevance (threshold {t:.2f}): " + " | ".join(parts))


def sentence_check() -> None:
    from eval.data import CLAIM_PAIRS, manual_page
    from eval.groundedness import get_scorer

    rows = [json.loads(line) for line in CLAIM_PAIRS.read_text().splitlines() if line.strip()]
    print(f"\n3. the sentence check on {len(rows)} hand-written pairs (R-intro, R-data, R-FAQ): "
          "correct sentences marked unsupported / wrong ones let through")
    for name in ("judge", "encoder", "lexical", "embedding"):
        scorer = get_scorer(name)
        right = scorer.score_many([(manual_page(r["source"], r["page"]), r["supported"]) for r in rows])
        wrong = scorer.score_many([(manual_page(r["source"], r["page"]), r["unsupported"]) for r in rows])
        red = sum(not all(s.supported for s in g.sentences) for g in right) / len(rows)
        through = sum(all(s.supported for s in g.sentences) for g in wrong) / len(rows)
        print(f"   {name:10} correct marked unsupported {red:.2f}   wrong let through {through:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="a STUDIO_HOME holding (or to hold) the corpora's collections")
    ap.add_argument("--encoder", help="a relevance encoder folder (eval.relevance.train writes one)")
    ap.add_argument("--train", help="train a relevance encoder into this folder first")
    ap.add_argument("--skip-rag", action="store_true", help="only the sentence check (part 3)")
    args = ap.parse_args()
    os.environ["STUDIO_HOME"] = args.home or tempfile.mkdtemp(prefix="rag-relevance-")
    from studio.env import apply_offline_defaults

    apply_offline_defaults()
    if not args.skip_rag:
        from eval.relevance import train
        from ingest.pipeline import Ingestor

        if not (args.encoder or args.train):
            ap.error("give --encoder FOLDER (a trained relevance encoder) or --train FOLDER, or --skip-rag")
        folder = args.encoder
        if args.train:
            print(json.dumps(train(args.train, progress=lambda s, n, loss: print(f"step {s}/{n} loss {loss:.3f}",
                                                                              flush=True))))
            folder = args.train
        rows = candidates(Ingestor())
        relevance(rows, folder)
        rerank_table(rows)
        answerability_table(rows)
    sentence_check()


if __name__ == "__main__":
    main()
