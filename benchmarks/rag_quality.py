"""RAG quality: the LangChain default chain vs the studio's, on real R manuals, bundled models.

Corpus: R-FAQ, R-intro, R-data, R-lang (Debian r-doc-pdf, 275 pages), ingested once with the
studio pipeline. Questions: benchmarks/data/r_manuals_questions.jsonl (32 answerable, each with
its answer page and key terms none of which occurs in the question) and
r_manuals_unanswerable.jsonl (10 the manuals cannot answer).

Baseline: LangChain's default retriever on the same collection (similarity, top 4), the
well-known "stuff" RAG prompt, and the bundled SmolLM2-135M through the studio's LangChain chat
model (temperature 0). Ours: RagChain with its defaults. Printed side by side:
- recall@5 of dense, BM25 and hybrid retrieval (the baseline's dense top-5);
- citation accuracy: share of citations whose chunk is on an answer page or holds a key term
  (goal >= 0.90; the baseline does not cite);
- refusal rate on unanswerable questions (goal >= 0.75) and wrong refusals on answerable ones
  (goal <= 0.10); the baseline "refuses" when it says it does not know;
- key-term share: answers containing a key term (goal >= 0.50);
- median time to first token (goal < 2 s; ours retrieves 4 chunks).

    .venv/bin/python benchmarks/rag_quality.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
MANUALS = [f"/usr/share/R/doc/manual/{m}.pdf" for m in ("R-FAQ", "R-intro", "R-data", "R-lang")]
STUFF_PROMPT = ("You are an assistant for question-answering tasks. Use the following pieces of retrieved "
                "context to answer the question. If you don't know the answer, just say that you don't know. "
                "Use three sentences maximum and keep the answer concise.\n"
                "Question: {question}\nContext: {context}\nAnswer:")
SAYS_NO = re.compile(r"(don't|do not|doesn't|does not) (know|say|mention|contain|provide)|no information|"
                     r"not (mentioned|provided|specified)|cannot (answer|find)|documents do not say", re.I)


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def has_key(text: str, q: dict) -> bool:
    return any(k.lower() in text.lower() for k in q["keys"])


def on_answer_page(source: str, page: int | None, q: dict) -> bool:
    return source == q["source"] and page in q["pages"]


def main() -> None:
    ap = argparse.ArgumentParser(description="RAG quality: LangChain default vs studio")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--home", help="a STUDIO_HOME to reuse (default: a fresh temporary one)")
    args = ap.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="rag-bench-")
    os.environ["STUDIO_HOME"] = home
    from studio.env import apply_offline_defaults

    apply_offline_defaults()
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from ingest.pipeline import Ingestor
    from studio.backends import GenerationSettings, load_backend
    from studio.langchain import as_langchain
    from studio.rag.chain import RagChain, RagConfig
    from studio.rag.retriever import RetrievalConfig, Retriever

    questions, unanswerable = load("r_manuals_questions.jsonl"), load("r_manuals_unanswerable.jsonl")
    assert not [k for q in questions for k in q["keys"] if k.lower() in q["q"].lower()], "a key is in its question"
    ing = Ingestor()
    ing.ingest(MANUALS, "rman")
    llm = load_backend("llamacpp")
    retriever = Retriever(ing, "rman")

    # retrieval
    recall = {}
    for mode in ("dense", "bm25", "hybrid"):
        cfg = RetrievalConfig(k=5, mode=mode)
        recall[mode] = statistics.mean(
            any(on_answer_page(h.source, h.page, q) for h in retriever.retrieve(q["q"], cfg=cfg)) for q in questions)
    lc_retriever = ing.store.as_vectorstore("rman", ing.embedder).as_retriever(search_kwargs={"k": 4})
    lc_recall5 = statistics.mean(
        any(on_answer_page(d.metadata["source"], d.metadata.get("page"), q)
            for d in ing.store.as_vectorstore("rman", ing.embedder).similarity_search(q["q"], k=5))
        for q in questions)

    # the LangChain default chain: retrieve top 4, stuff them into the prompt, stream the answer
    chat_model = as_langchain(llm, GenerationSettings(temperature=0, max_tokens=160))
    stuff = ChatPromptTemplate.from_messages([("user", STUFF_PROMPT)]) | chat_model | StrOutputParser()
    base = {"answers": [], "ttft": []}
    for q in questions + unanswerable:
        start = time.perf_counter()
        docs = lc_retriever.invoke(q["q"])
        first, text = None, ""
        for piece in stuff.stream({"question": q["q"], "context": "\n\n".join(d.page_content for d in docs)}):
            if piece and first is None:
                first = time.perf_counter() - start
            text += piece
        base["answers"].append(text)
        base["ttft"].append(first or 0.0)

    # ours
    chain = RagChain(retriever, llm, RagConfig())
    ours = {"results": [], "ttft": []}
    for q in questions + unanswerable:
        res = chain.ask(q["q"])
        ours["results"].append(res)
        ours["ttft"].append(res.first_token_seconds or 0.0)

    n = len(questions)
    base_ans, base_un = base["answers"][:n], base["answers"][n:]
    ours_ans, ours_un = ours["results"][:n], ours["results"][n:]
    cited = [(c, q) for r, q in zip(ours_ans, questions, strict=True) if r.answerable for c in r.citations]
    figures = {
        "recall_at_5": {"baseline_dense": lc_recall5, **recall},
        "citation_accuracy": statistics.mean(on_answer_page(c.source, c.page, q) or has_key(c.text, q)
                                             for c, q in cited) if cited else 0.0,
        "refusal_rate": {"baseline": statistics.mean(bool(SAYS_NO.search(a)) for a in base_un),
                         "ours": statistics.mean(not r.answerable for r in ours_un)},
        "wrong_refusals": {"baseline": statistics.mean(bool(SAYS_NO.search(a)) for a in base_ans),
                           "ours": statistics.mean(not r.answerable for r in ours_ans)},
        "key_term_share": {
            "baseline": statistics.mean(has_key(a, q) for a, q in zip(base_ans, questions, strict=True)),
            "ours": statistics.mean(has_key(r.answer, q) for r, q in zip(ours_ans, questions, strict=True))},
        "ttft_median_s": {"baseline": statistics.median(base["ttft"][:n]),
                          "ours": statistics.median(ours["ttft"][:n])},
        "groundedness_mean_ours": statistics.mean(r.groundedness for r in ours_ans if r.groundedness is not None),
    }
    r5 = figures["recall_at_5"]
    print(f"{len(questions)} answerable + {len(unanswerable)} unanswerable questions over 4 R manuals, "
          "SmolLM2-135M (llama.cpp, greedy)")
    print(f"{'':34}{'LangChain default':>18}{'studio':>10}   goal")
    print(f"{'recall@5 dense':34}{r5['baseline_dense']:>18.3f}{r5['dense']:>10.3f}")
    print(f"{'recall@5 bm25':34}{'-':>18}{r5['bm25']:>10.3f}")
    print(f"{'recall@5 hybrid (our default)':34}{'-':>18}{r5['hybrid']:>10.3f}")
    print(f"{'citation accuracy':34}{'no citations':>18}{figures['citation_accuracy']:>10.3f}   >= 0.90")
    for key, label, goal in (("refusal_rate", "refusals on unanswerable", ">= 0.75"),
                             ("wrong_refusals", "wrong refusals on answerable", "<= 0.10"),
                             ("key_term_share", "answers with the key term", ">= 0.50")):
        print(f"{label:34}{figures[key]['baseline']:>18.3f}{figures[key]['ours']:>10.3f}   {goal}")
    t = figures["ttft_median_s"]
    print(f"{'time to first token (median)':34}{t['baseline']:>16.2f} s{t['ours']:>8.2f} s   < 2 s")
    print(f"mean groundedness of our answers (interim lexical scorer): {figures['groundedness_mean_ours']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
