"""`studio ask` and `studio sessions`: grounded answers with citations from a terminal."""

from __future__ import annotations

import argparse
import json
import sys

from studio.cli_common import add_model_options, backend_from_args, load_studio_config, make_ingestor, read_batch
from studio.errors import StudioError


def add_parsers(sub) -> None:
    ask = sub.add_parser("ask", help="a grounded answer with citations from a collection")
    ask.add_argument("question", nargs="?", help="the question (or --batch)")
    ask.add_argument("--collection", required=True)
    ask.add_argument("--chroma-url")
    ask.add_argument("--k", type=int, help="chunks to retrieve (default 4)")
    ask.add_argument("--mode", choices=["dense", "bm25", "hybrid"], help="retrieval (default hybrid)")
    ask.add_argument("--style", choices=["hybrid", "generative", "extractive"],
                     help="hybrid: model answer + quotes (default); extractive: quotes only, no model")
    ask.add_argument("--source", action="append", help="only search this document (repeatable)")
    ask.add_argument("--session", help="continue a saved chat session (its history condenses follow-ups)")
    ask.add_argument("--batch", metavar="FILE.jsonl", help='one {"q": ...} per line, answered one JSON line each')
    ask.add_argument("--json", action="store_true")
    add_model_options(ask)
    ask.set_defaults(handler=lambda a: cmd_ask(a, load_studio_config(a)))

    ses = sub.add_parser("sessions", help="saved chat sessions: list, show, rename, rm, export")
    ssub = ses.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    ls = ssub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_sessions_list)
    for name, helptext in (("show", "print a session as Markdown"), ("rm", "delete a session")):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("id")
        p.set_defaults(handler=cmd_sessions_show if name == "show" else cmd_sessions_rm)
    rn = ssub.add_parser("rename")
    rn.add_argument("id")
    rn.add_argument("title")
    rn.set_defaults(handler=cmd_sessions_rename)
    ex = ssub.add_parser("export", help="write a session as Markdown or JSON")
    ex.add_argument("id")
    ex.add_argument("--format", choices=["md", "json"], default="md")
    ex.add_argument("--out", help="file to write (default: stdout)")
    ex.set_defaults(handler=cmd_sessions_export)


def build_chain(args, cfg):
    from studio.backends import settings_from_config
    from studio.rag.chain import RagChain
    from studio.rag.retriever import Retriever

    rag = cfg.rag
    if args.k:
        rag.retrieval.k = args.k
    if args.mode:
        rag.retrieval.mode = args.mode
    if args.style:
        rag.style = args.style
    rag.check()
    ingestor = make_ingestor(args, cfg)
    retriever = Retriever(ingestor, args.collection, rag.retrieval)
    backend = None if rag.style == "extractive" else backend_from_args(args, cfg)
    # answers use the grounded defaults (rag.temperature, rag.max_tokens) unless the user asks otherwise
    settings = settings_from_config(
        cfg.generation, temperature=rag.temperature if args.temperature is None else args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=args.seed, max_tokens=args.max_tokens or rag.max_tokens,
        stop=args.stop or [])
    return RagChain(retriever, backend, rag, settings)


def result_json(res) -> dict:
    return {
        "question": res.question,
        "answer": res.answer,
        "citations": [{"n": c.n, "source": c.source, "page": c.page, "chunk": c.chunk, "text": c.text,
                       "quote": c.quote, "section": c.section, "anchor": c.anchor} for c in res.citations],
        "groundedness": res.groundedness,
        "answerable": res.answerable,
        "refusal": res.refusal,
        "answerability": res.answerability,  # the evidence model's chance that the documents answer
        "withheld": res.withheld,  # the model's sentences the quoted passages did not support
        "standalone_question": res.standalone_question,
        "seconds": round(res.seconds, 3),
        "first_token_seconds": round(res.first_token_seconds or 0.0, 3),
    }


def cmd_ask(args, cfg) -> int:
    if bool(args.question) == bool(args.batch):
        raise StudioError("give either a QUESTION or --batch FILE.jsonl")
    chain = build_chain(args, cfg)
    if args.batch:
        for item in read_batch(args.batch):
            print(json.dumps(result_json(chain.ask(item["q"], sources=args.source))), flush=True)
        return 0
    sessions = history = None
    if args.session:
        from studio.rag.sessions import Sessions

        sessions = Sessions()
        sessions.get(args.session, args.user)
        history = [{"role": m["role"], "content": m["content"]}
                   for m in sessions.messages(args.session, args.user)]
    stream = chain.stream(args.question, history, args.source)
    if args.json:
        res = stream.consume()
        print(json.dumps(result_json(res)))
    else:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        res = stream.result
        sys.stdout.write("\n")
        for c in res.citations:
            print(f"[{c.n}] {c.place}")
        if res.groundedness is not None:
            print(f"groundedness {res.groundedness:.2f}", file=sys.stderr)
    if sessions:
        sessions.add_message(args.session, "user", args.question, user=args.user)
        sessions.add_message(args.session, "assistant", res.answer,
                             citations=result_json(res)["citations"],
                             meta={"groundedness": res.groundedness, "answerable": res.answerable}, user=args.user)
    return 0


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from datetime import datetime

    from studio.rag.sessions import Sessions

    rows = Sessions().list(args.user)
    if args.json:
        print(json.dumps([asdict(s) for s in rows]))
    for s in rows if not args.json else []:
        when = datetime.fromtimestamp(s.updated).strftime("%Y-%m-%d %H:%M")
        print(f"{s.id}  {when}  {s.title}" + (f"  [{s.collection}]" if s.collection else ""))
    return 0


def cmd_sessions_show(args: argparse.Namespace) -> int:
    from studio.rag.sessions import Sessions

    print(Sessions().export_markdown(args.id, args.user))
    return 0


def cmd_sessions_rm(args: argparse.Namespace) -> int:
    from studio.rag.sessions import Sessions

    Sessions().delete(args.id, args.user)
    print(f"deleted session {args.id}")
    return 0


def cmd_sessions_rename(args: argparse.Namespace) -> int:
    from studio.rag.sessions import Sessions

    Sessions().rename(args.id, args.title, args.user)
    return 0


def cmd_sessions_export(args: argparse.Namespace) -> int:
    from studio.rag.sessions import Sessions

    s = Sessions()
    text = (json.dumps(s.export_json(args.id, args.user), indent=2) if args.format == "json"
            else s.export_markdown(args.id, args.user))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
