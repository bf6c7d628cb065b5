"""Ingest speed and retrieval quality: the LangChain default pipeline vs the studio's.

Corpus: four real R manuals from Debian's r-doc-pdf (R-FAQ, R-intro, R-data, R-lang: 275 pages).
Baseline: PyPDFLoader + RecursiveCharacterTextSplitter(1000, 200) + HuggingFaceEmbeddings (the
same bundled MiniLM) + Chroma.from_documents. Ours: ``studio ingest``'s pipeline with defaults.

Prints cold ingest time of each and the speedup (goal >= 1.5x), re-ingest of the unchanged corpus
(goal >= 20x faster than our cold ingest), recall@5 of both on benchmarks/data/
r_manuals_questions.jsonl (32 hand-written questions, each with the page that answers it; ours
must be at least as high), and the peak resident memory of each pipeline. Each pipeline runs in
a fresh child process of this one run (so model loads count and peak memory is its own); both
use a warm disk cache and, for ours, the ONNX export cached by an earlier run (reported apart).

    .venv/bin/python benchmarks/ingest_speed.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

MANUALS = [f"/usr/share/R/doc/manual/{m}.pdf" for m in ("R-FAQ", "R-intro", "R-data", "R-lang")]
QUESTIONS = Path(__file__).parent / "data" / "r_manuals_questions.jsonl"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


def recall_at_5(hits_per_question: list[list[tuple[str, int | None]]], questions: list[dict]) -> float:
    """Share of questions with a top-5 hit from the right manual on an answering page."""
    found = 0
    for hits, q in zip(hits_per_question, questions, strict=True):
        found += any(src == q["source"] and page in q["pages"] for src, page in hits[:5])
    return found / len(questions)


def run_baseline(out: mp.Queue, home: str) -> None:
    os.environ.update(HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    import chromadb
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from studio.registry import resolve_model

    start = time.perf_counter()
    docs = [d for path in MANUALS for d in PyPDFLoader(path).load()]
    t_load = time.perf_counter() - start
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    t_split = time.perf_counter() - start - t_load
    emb = HuggingFaceEmbeddings(model_name=str(resolve_model("minilm-l6-v2").path))
    client = chromadb.PersistentClient(path=home, settings=chromadb.config.Settings(anonymized_telemetry=False))
    store = Chroma.from_documents(chunks, emb, client=client, collection_name="baseline")
    total = time.perf_counter() - start
    questions = load_questions()
    hits = []
    for q in questions:
        # PyPDFLoader's "page" is 0-based; the contract's pages are 1-based
        hits.append([(Path(d.metadata["source"]).name, d.metadata["page"] + 1)
                     for d in store.similarity_search(q["q"], k=5)])
    out.put({"cold_s": total, "load_s": t_load, "split_s": t_split, "chunks": len(chunks),
             "pages": len(docs), "recall_at_5": recall_at_5(hits, questions), "peak_rss_mb": peak_rss_mb()})


def run_ours(out: mp.Queue, home: str) -> None:
    os.environ["STUDIO_HOME"] = home
    from studio.env import apply_offline_defaults

    apply_offline_defaults()
    from ingest.config import IngestConfig
    from ingest.pipeline import Ingestor

    start = time.perf_counter()
    ing = Ingestor(IngestConfig())
    report = ing.ingest(MANUALS, "ours")
    cold = time.perf_counter() - start
    assert all(f.status == "added" for f in report.files), report
    start = time.perf_counter()
    again = ing.ingest(MANUALS, "ours")
    reingest = time.perf_counter() - start
    assert all(f.status == "unchanged" for f in again.files)
    questions = load_questions()
    hits = [[(h.source, h.page) for h in ing.query("ours", q["q"], k=5)] for q in questions]
    out.put({"cold_s": cold, "reingest_s": reingest, "chunks": sum(f.chunks for f in report.files),
             "engine": ing.embedder.engine, "recall_at_5": recall_at_5(hits, questions),
             "peak_rss_mb": peak_rss_mb()})


def prepare_onnx(out: mp.Queue, home: str) -> None:
    """Export (or find) the ONNX model once, so the cold ingest measures ingestion only."""
    os.environ["STUDIO_HOME"] = home
    start = time.perf_counter()
    from ingest.embeddings import MiniLMEmbeddings

    engine = MiniLMEmbeddings().engine
    out.put({"export_s": time.perf_counter() - start, "engine": engine})


def in_child(target, home: str) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(out, home))
    proc.start()
    result = out.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="ingest speed: LangChain default vs studio")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    missing = [m for m in MANUALS if not Path(m).exists()]
    if missing:
        raise SystemExit(f"missing {missing}: apt-get install r-doc-pdf")
    with tempfile.TemporaryDirectory() as home:
        onnx = in_child(prepare_onnx, home)
        with tempfile.TemporaryDirectory() as base_home:
            base = in_child(run_baseline, base_home)
        ours = in_child(run_ours, home)
    speedup = base["cold_s"] / ours["cold_s"]
    reingest_x = ours["cold_s"] / ours["reingest_s"]
    print(f"corpus: 4 R manuals, {base['pages']} pages; {len(load_questions())} questions with answer pages")
    print(f"{'':28}{'cold ingest':>12}{'chunks':>8}{'recall@5':>10}{'peak RSS':>10}")
    print(f"{'LangChain default':28}{base['cold_s']:>10.1f} s{base['chunks']:>8}{base['recall_at_5']:>10.3f}"
          f"{base['peak_rss_mb']:>7.0f} MB")
    print(f"{'studio (' + ours['engine'] + ' embeddings)':28}{ours['cold_s']:>10.1f} s{ours['chunks']:>8}"
          f"{ours['recall_at_5']:>10.3f}{ours['peak_rss_mb']:>7.0f} MB")
    print(f"cold ingest speedup: {speedup:.2f}x (goal >= 1.5x)")
    print(f"re-ingest unchanged: {ours['reingest_s'] * 1000:.0f} ms, {reingest_x:.0f}x faster than our cold "
          f"ingest (goal >= 20x)")
    print(f"baseline breakdown: load {base['load_s']:.1f} s, split {base['split_s']:.2f} s, "
          f"embed+store {base['cold_s'] - base['load_s'] - base['split_s']:.1f} s; "
          f"one-time ONNX export (cached): {onnx['export_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": base, "ours": ours, "onnx": onnx, "speedup": speedup,
                                               "reingest_x": reingest_x}, indent=2))


if __name__ == "__main__":
    main()
