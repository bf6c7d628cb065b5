"""`studio ingest`, `studio docs ...` and `studio query`: the Documents tab from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from studio.cli_common import load_studio_config, make_ingestor, read_batch
from studio.errors import StudioError


def add_parsers(sub) -> None:
    """Register the document commands on the main parser's subparsers."""

    def store_opts(p: argparse.ArgumentParser, collection_required: bool = True) -> None:
        p.add_argument("--collection", required=collection_required, help="Chroma collection name")
        p.add_argument("--chroma-url", help="a Chroma server, e.g. http://127.0.0.1:8000 (default: embedded)")

    ing = sub.add_parser("ingest", help="load files or folders, chunk, embed, store in Chroma",
                         description="Exit code 1 when some files failed (the others are stored).")
    ing.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    store_opts(ing)
    ing.add_argument("--splitter", choices=["recursive", "sentence", "markdown", "token"])
    ing.add_argument("--chunk-size", type=int, help="characters (tokens for --splitter token)")
    ing.add_argument("--chunk-overlap", type=int)
    ing.add_argument("--max-file-mb", type=float)
    ing.add_argument("--max-pages", type=int)
    ing.add_argument("--json", action="store_true")
    ing.set_defaults(handler=lambda a: cmd_ingest(a, load_studio_config(a)))

    docs = sub.add_parser("docs", help="what a collection holds; remove documents")
    dsub = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    ls = dsub.add_parser("list", help="the documents of a collection")
    store_opts(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=lambda a: cmd_docs_list(a, load_studio_config(a)))
    rm = dsub.add_parser("rm", help="remove one document (all its chunks)")
    rm.add_argument("source", help="the document's source name, as `docs list` shows it")
    store_opts(rm)
    rm.set_defaults(handler=lambda a: cmd_docs_rm(a, load_studio_config(a)))
    cols = dsub.add_parser("collections", help="all collections with their sizes")
    store_opts(cols, collection_required=False)
    cols.add_argument("--json", action="store_true")
    cols.set_defaults(handler=lambda a: cmd_collections(a, load_studio_config(a)))
    pub = dsub.add_parser("publish", help="share one of your collections with everyone, read-only (admins)")
    store_opts(pub)
    pub.add_argument("--undo", action="store_true", help="make it private again")
    pub.set_defaults(handler=lambda a: cmd_publish(a, load_studio_config(a)))
    reemb = dsub.add_parser("reembed", help="embed a collection's chunks again with another embedding model")
    store_opts(reemb)
    reemb.add_argument("--model", required=True, help="an installed sentence-transformers model (`studio models list "
                    "--kind embedding`)")
    reemb.set_defaults(handler=lambda a: cmd_reembed(a, load_studio_config(a)))
    drop = dsub.add_parser("drop", help="delete a whole collection")
    store_opts(drop)
    drop.add_argument("--yes", action="store_true", help="really delete it")
    drop.set_defaults(handler=lambda a: cmd_drop(a, load_studio_config(a)))

    q = sub.add_parser("query", help="retrieval only: the chunks closest to a question")
    q.add_argument("text", nargs="?", help="what to look for (or --batch)")
    store_opts(q)
    q.add_argument("--k", type=int, default=5)
    q.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid",
                   help="dense vectors, BM25 keywords, or both fused (default)")
    q.add_argument("--batch", metavar="FILE.jsonl", help='one {"q": ...} per line, answered one JSON line each')
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=lambda a: cmd_query(a, load_studio_config(a)))




def cmd_ingest(args, cfg) -> int:
    from tqdm import tqdm

    ing = make_ingestor(args, cfg)
    bar = tqdm(total=0, unit="file", file=sys.stderr, disable=None, desc=f"ingest → {args.collection}")

    def progress(done: int, total: int, source: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(source[-40:], refresh=True)

    report = ing.ingest(args.paths, args.collection, progress)
    bar.close()
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for f in report.files:
            detail = f.error if f.status == "failed" else f"{f.chunks} chunks" + (
                f"; OCR read pages {f.ocr}" if f.ocr else "")
            print(f"{f.status:9} {f.source}  ({detail})")
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "failed")
                           if report.count(s))
        print(f"{args.collection}: {counts or 'no files'} in {report.seconds:.1f} s")
    return 1 if report.count("failed") else 0


def cmd_docs_list(args, cfg) -> int:
    ing = make_ingestor(args, cfg)
    records = ing.documents(args.collection)
    if args.json:
        print(json.dumps({"collection": args.collection, "documents": [
            {"source": r.source, "chunks": r.chunks, "pages": r.pages, "bytes": r.bytes, "ocr_pages": r.ocr,
             "ingested_at": datetime.fromtimestamp(r.ingested_at).isoformat(timespec="seconds")}
            for r in records]}))
    else:
        for r in records:
            pages = (f"{r.pages} pages, " if r.pages else "") + (f"OCR on {r.ocr}, " if r.ocr else "")
            print(f"{r.source}  ({pages}{r.chunks} chunks)")
        print(f"{len(records)} documents in {args.collection}")
    return 0


def cmd_docs_rm(args, cfg) -> int:
    n = make_ingestor(args, cfg).remove(args.collection, args.source)
    print(f"removed {args.source} ({n} chunks) from {args.collection}")
    return 0


def cmd_collections(args, cfg) -> int:
    ing = make_ingestor(args, cfg)
    rows = [{"collection": c.name, "chunks": ing.store.count(c.name), "documents": len(ing.documents(c.name)),
             "owner": c.owner, "shared": c.shared, "embed_model": ing.model_of(c.name)} for c in ing.collections()]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            whose = ("shared by " if row["shared"] else "private to ") + row["owner"]
            print(f"{row['collection']}  ({row['documents']} documents, {row['chunks']} chunks; {whose}; "
                  f"embedded with {row['embed_model']})")
    return 0


def cmd_reembed(args, cfg) -> int:
    """Re-embed with a progress line; the old vectors serve searches until the new ones are all in."""
    from studio.modelstore import embedding_model_names

    if args.model not in embedding_model_names():
        raise StudioError(f"{args.model!r} is not an installed sentence-transformers model; "
                          f"installed: {', '.join(embedding_model_names())}")
    ing = make_ingestor(args, cfg)
    before = ing.model_of(args.collection)

    def show(done: int, total: int, _name: str) -> None:
        print(f"\rre-embedding {args.collection}: {done:,} of {total:,} chunks", end="", file=sys.stderr, flush=True)

    n = ing.reembed(args.collection, args.model, show)
    print(file=sys.stderr)
    print(f"{args.collection}: {n:,} chunks embedded with {args.model}" +
          (f" (was {before})" if before != args.model else " (already)"))
    return 0


def cmd_publish(args, cfg) -> int:
    info = make_ingestor(args, cfg).publish(args.collection, shared=not args.undo)
    print(f"{info.name} is now " + ("shared with everyone, read-only" if info.shared else f"private to {info.owner}"))
    return 0


def cmd_drop(args, cfg) -> int:
    if not args.yes:
        raise StudioError(f"this deletes every chunk of {args.collection!r}; add --yes to confirm")
    make_ingestor(args, cfg).delete_collection(args.collection)
    print(f"deleted collection {args.collection}")
    return 0




def cmd_query(args, cfg) -> int:
    if bool(args.text) == bool(args.batch):
        raise StudioError("give either a query TEXT or --batch FILE.jsonl")
    from studio.rag.config import RetrievalConfig
    from studio.rag.retriever import Retriever

    retriever = Retriever(make_ingestor(args, cfg), args.collection, RetrievalConfig(k=args.k, mode=args.mode))
    if args.batch:
        for item in read_batch(args.batch):
            cfg_q = RetrievalConfig(k=int(item.get("k", args.k)), mode=args.mode)
            hits = retriever.retrieve(item["q"], cfg=cfg_q)
            print(json.dumps({"q": item["q"], "hits": [h.to_dict() for h in hits]}), flush=True)
        return 0
    hits = retriever.retrieve(args.text)
    if args.json:
        print(json.dumps({"hits": [h.to_dict() for h in hits]}))
    else:
        for i, h in enumerate(hits, 1):
            where = f"{h.source} p.{h.page}" if h.page else h.source
            snippet = " ".join(h.text.split())[:160]
            print(f"[{i}] {where}  score {h.score:.3f}\n    {snippet}")
    return 0
