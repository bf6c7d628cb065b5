"""Grounded chat for the Chat tab: chains per collection, citation links, the sources panel."""

from __future__ import annotations

import html
import re
import threading
from types import SimpleNamespace

from ingest.store import place
from studio.backends import BackendCache
from studio.env import LOCAL_USER
from studio.markup import neutralize
from studio.rag.config import RagConfig, RetrievalConfig

NO_COLLECTION = "(none: plain chat)"
_CITE = re.compile(r"\[(\d{1,2})\]")


class RagService:
    """Builds :class:`RagChain`s over the Documents tab's ingestor and the loaded chat backends."""

    def __init__(self, docs, backends: BackendCache, cfg: RagConfig):
        self.docs = docs
        self.backends = backends
        self.cfg = cfg
        self._lock = threading.Lock()

    def chain(self, collection: str, backend, k: int, mode: str, min_score: float, style: str, settings,
              user: str = LOCAL_USER):
        from studio.rag.chain import RagChain
        from studio.rag.retriever import Retriever

        rag = RagConfig(**{**self.cfg.__dict__,
                           "retrieval": RetrievalConfig(**{**self.cfg.retrieval.__dict__, "k": int(k), "mode": mode}),
                           "min_score": float(min_score), "style": style}).check()
        retriever = Retriever(self.docs.ingestor(user=user), collection, rag.retrieval)
        return RagChain(retriever, None if style == "extractive" else backend, rag, settings)


def linkify(answer: str, available: int) -> str:
    """Turn the studio's ``[n]`` labels into Markdown links to the sources panel's entry n.

    In a quote line (``> “...” [n]``) only the label after the closing quote is linked: a ``[2]``
    inside the quoted document text is the document's, and must not pose as a citation.
    """
    def link(m: re.Match) -> str:
        return f"[[{m.group(1)}]](#chat-src-{m.group(1)})" if 1 <= int(m.group(1)) <= available else m.group(0)

    lines = []
    for line in answer.split("\n"):
        if line.startswith("> “") and "”" in line:
            body, _, label = line.rpartition("”")
            lines.append(body + "”" + _CITE.sub(link, label))
        else:
            lines.append(_CITE.sub(link, line))
    return "\n".join(lines)


def _mark(text: str, quote: str) -> str:
    """The passage with the quoted sentences highlighted (whitespace-insensitive)."""
    if not quote:
        return html.escape(text)
    words = [re.escape(w) for w in quote.rstrip(" …").split()[:40]]
    match = re.search(r"\s+".join(words), text) if words else None
    if not match:
        return html.escape(text)
    a, b = match.span()
    return html.escape(text[:a]) + "<mark>" + html.escape(text[a:b]) + "</mark>" + html.escape(text[b:])


def sources_html(result) -> str:
    """The sources panel: each cited passage with file, page and the quoted text marked."""
    if result is None:
        return ""
    if not result.answerable and getattr(result, "refusal", "") == "unsupported":
        return ("<p class='sources-none'>The passages found are close to the question, but they do not support "
                f"this answer (groundedness {result.groundedness:.2f}): treat it as unanswered.</p>"
                + answer_check_html(result))
    if not result.answerable:
        closest = result.hits[0] if result.hits else None
        hint = (f" The closest passage was in {html.escape(place(closest.source, closest.page))}"
                + f" (similarity {closest.score:.2f}).")
        return "<p class='sources-none'>No passage in this collection answers the question." + (
            hint if closest else "") + "</p>"
    parts = []
    for c in result.citations:
        where = html.escape(place(c.source, c.page, getattr(c, "section", ""), getattr(c, "anchor", ""), " · "))
        parts.append(f"<details id='chat-src-{c.n}' class='source' open><summary>[{c.n}] {where}</summary>"
                     f"<pre>{_mark(c.text, c.quote)}</pre></details>")
    return answer_check_html(result) + withheld_html(result) + "\n".join(parts)


def withheld_html(result) -> str:
    """What the model wrote that the quoted passages do not support: said, not shown as the answer."""
    left = getattr(result, "withheld", "")
    if not left:
        return ""
    return ("<p class='withheld'>The model also wrote “" + html.escape(left[:400]) + "”, which the quoted passages "
            "do not support, so the answer leads with the quotes instead.</p>")


def answer_check_html(result) -> str:
    """The groundedness score and each judged sentence, unsupported ones highlighted."""
    if result.groundedness is None:
        return ""
    sents = result.sentences or []
    bad = sum(not s["supported"] for s in sents)
    items = "".join(
        f"<li class='{'supported' if s['supported'] else 'unsupported'}' title='support {s['score']:.2f}'>"
        f"{html.escape(s['text'])}</li>" for s in sents)
    note = (f"{bad} of {len(sents)} sentences not supported by the sources" if bad
            else f"all {len(sents)} sentences supported by the sources")
    return (f"<div class='answer-check'><p class='grounded'>groundedness {result.groundedness:.2f} · {note}</p>"
            f"<ul>{items}</ul></div>")


def highlight_unsupported(reply: str, sentences: list[dict]) -> str:
    """The reply with each unsupported sentence wrapped in ``<mark class="unsupported">``."""
    for s in sentences:
        if s["supported"]:
            continue
        words = [re.escape(w) for w in s["text"].split()]
        pattern = r"(?:\s*\[\d{1,2}\])?\s+".join(words)
        match = re.search(pattern, reply) if words else None
        if match:
            a, b = match.span()
            reply = (reply[:a] + "<mark class='unsupported' title='not supported by the sources'>" + reply[a:b]
                     + "</mark>" + reply[b:])
    return reply


# --- what a saved grounded answer keeps, to be drawn again when its chat is reopened --------------------
def answer_meta(result, collection: str, line: str) -> dict:
    """The message metadata saved with a grounded answer: enough to redraw its [n] links, its marked
    sentences, the sources panel and the status line, without running retrieval again."""
    closest = result.hits[0] if result.hits else None
    return {"grounded": True, "collection": collection, "answerable": result.answerable,
            "refusal": getattr(result, "refusal", ""), "groundedness": result.groundedness,
            "sentences": result.sentences or [], "available": len(result.hits), "stats": line,
            "withheld": getattr(result, "withheld", ""),
            "closest": {"source": closest.source, "page": closest.page, "score": closest.score} if closest else None}


def saved_result(meta: dict, citations: list[dict]) -> SimpleNamespace:
    """A saved answer's metadata and citations in the shape :func:`sources_html` reads."""
    closest = meta.get("closest")
    hits = [SimpleNamespace(**closest)] if closest else []
    return SimpleNamespace(answerable=bool(meta.get("answerable")), refusal=meta.get("refusal", ""),
                           groundedness=meta.get("groundedness"), sentences=meta.get("sentences") or [],
                           citations=[SimpleNamespace(**{"quote": "", **c}) for c in citations], hits=hits,
                           withheld=meta.get("withheld", ""))


def rendered_answer(answer: str, meta: dict) -> str:
    """A grounded answer as the chat shows it: defused, unsupported sentences marked, [n] linked."""
    marked = highlight_unsupported(neutralize(answer), meta.get("sentences") or [])
    return linkify(marked, int(meta.get("available", 0)))
