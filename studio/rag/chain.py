"""The RAG chain: condense -> retrieve -> decide answerability -> pick passages -> answer -> cite.

>>> chain = RagChain(Retriever(Ingestor(), "manuals"), load_backend("llamacpp"))
>>> stream = chain.stream("How do I read a CSV file?")
>>> for piece in stream: print(piece, end="")       # the answer, streamed
>>> stream.result.citations                          # [Citation(n=1, source=..., page=...)]

Answer styles (``RagConfig.style``):
- ``hybrid`` (default): the model writes a short answer from the best sentences, then the
  studio quotes those sentences with their [n]. Measured on a 135M model this keeps exact names
  (functions, options) that the model alone paraphrases away. The model's sentences are held
  back until the groundedness scorer has checked each against the quoted passages: only the
  supported ones are shown, so an answer whose model sentence is wrong ("use a faster database
  server") leads with the quotes; the rest is kept in ``AskResult.withheld``.
- ``generative``: the model answers from whole chunks (for larger models).
- ``extractive``: no model call; the best sentences, quoted and cited.

Groundedness: the model-written part of the answer (quotes are verbatim) is scored sentence by
sentence against the retrieved chunks by ``eval.groundedness`` (``groundedness_scorer``).

A question is ``answerable`` when the answerability model (:mod:`studio.rag.answerability`: the best
cosine, rare-term coverage, words the collection never uses, dense/BM25 agreement, the best sentence's
cosine) gives at least ``min_evidence`` (default: the threshold fitted on the tuning halves of three
corpora) and the best chunk's cosine reaches the optional floor ``min_score``; otherwise the answer
is the plain refusal and no model is called. A ``generative``
answer (the model's words only, no quotes) none of whose sentences the groundedness scorer finds
supported is marked unanswerable too (``refusal == "unsupported"``, ``refuse_unsupported``): the
passages were close to the question, but they do not say what the model said. Hybrid and
extractive answers carry verbatim quotes, so there the score only highlights the model's
unsupported sentences.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from eval.groundedness import get_scorer
from eval.text import claims
from ingest.splitters import split_sentences
from ingest.store import Hit, place
from studio.backends.base import ChatBackend, GenerationSettings
from studio.env import install_secret
from studio.errors import StudioError
from studio.limits import check_text
from studio.rag import answerability
from studio.rag.config import RagConfig
from studio.rag.prompt import REFUSAL, answer_messages, condense_messages, looks_like_instruction, new_tag
from studio.rag.retriever import Retriever
from studio.text import tokenize

MAX_QUOTE = 320  # characters of one quote
ANSWER_STOPS = ["\n\n", "Question:"]  # added to every answer's settings (with the request's delimiters)
_CITE = re.compile(r"\[(\d{1,2})\]")
_FOLLOW_UP = re.compile(r"^(and|but|also|what about|how about|then|so|what if)\b"
                        r"|\b(it|its|this|that|these|those|them|they|there|one|ones)\b", re.IGNORECASE)


@dataclass
class Citation:
    n: int
    source: str
    page: int | None
    chunk: int
    text: str
    quote: str = ""
    section: str = ""  # heading path, where the file has headings (HTML, Markdown)
    anchor: str = ""  # the section's id: cite it as source#anchor

    @property
    def place(self) -> str:
        return place(self.source, self.page, self.section, self.anchor)


@dataclass
class Quote:
    n: int
    text: str
    score: float


@dataclass
class AskResult:
    question: str
    answer: str
    citations: list[Citation]
    answerable: bool
    groundedness: float | None
    standalone_question: str
    hits: list[Hit]
    seconds: float = 0.0
    first_token_seconds: float | None = None
    sentences: list[dict] = field(default_factory=list)  # per-sentence groundedness of scored_text
    scored_text: str = ""  # what groundedness judged: the model's words (quotes are verbatim)
    refusal: str = ""  # why answerable is false: "no passage" close enough, the "model" declined, or "unsupported"
    evidence: dict = field(default_factory=dict)  # what the answerability model read (studio.rag.answerability)
    answerability: float | None = None  # its probability that the documents answer
    withheld: str = ""  # the model's sentences left out of a hybrid answer: the passages did not support them

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hits"] = [h.to_dict() for h in self.hits]
        return out


def parse_citations(text: str, available: int) -> list[int]:
    """The distinct [n] numbers in ``text`` that name one of ``available`` passages, in order."""
    seen: list[int] = []
    for m in _CITE.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= available and n not in seen:
            seen.append(n)
    return seen


def supported_citations(text: str, passages: list[str], min_support: float = 0.5) -> list[int]:
    """[n] markers in ``text`` whose sentence shares >= ``min_support`` of its content words with passage n."""
    kept: list[int] = []
    for sentence in split_sentences(text):
        words = set(tokenize(_CITE.sub("", sentence)))
        for n in parse_citations(sentence, len(passages)):
            have = set(tokenize(passages[n - 1]))
            if words and len(words & have) / len(words) >= min_support and n not in kept:
                kept.append(n)
    return kept


def drop_citations(text: str, keep: list[int]) -> str:
    """Remove [n] markers not in ``keep`` (invented, or pointing at a passage that does not say it)."""
    return _CITE.sub(lambda m: m.group(0) if int(m.group(1)) in keep else "", text)


class AnswerStream:
    """Iterate for the answer's text pieces; ``result`` holds the :class:`AskResult` afterwards."""

    def __init__(self, pieces: Iterator[str], finish):
        self._pieces = pieces
        self._finish = finish
        self._start = time.perf_counter()
        self.text = ""
        self.first_token_seconds: float | None = None
        self.result: AskResult | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if piece and self.first_token_seconds is None:
                self.first_token_seconds = time.perf_counter() - self._start
            self.text += piece
            yield piece
        self.result = self._finish(self.text)
        self.result.seconds = time.perf_counter() - self._start
        self.result.first_token_seconds = self.first_token_seconds

    def consume(self) -> AskResult:
        for _ in self:
            pass
        return self.result


class RagChain:
    """Grounded question answering over one collection with any chat backend."""

    def __init__(self, retriever: Retriever, backend: ChatBackend | None, cfg: RagConfig | None = None,
                 settings: GenerationSettings | None = None, delimiter_key: bytes | None = None):
        """``delimiter_key`` keys the per-request passage delimiters (:func:`studio.rag.prompt.new_tag`);
        default: this install's secret. Eval suites pass a key of their own so runs agree across machines."""
        self.retriever = retriever
        self.backend = backend
        self.delimiter_key = delimiter_key
        self.cfg = (cfg or RagConfig()).check()
        self.settings = settings or GenerationSettings(temperature=self.cfg.temperature,
                                                       max_tokens=self.cfg.max_tokens)
        if backend is None and self.cfg.style != "extractive":
            raise StudioError(f"the {self.cfg.style} answer style needs a chat model")

    # --- steps --------------------------------------------------------------------------------------
    def condense(self, question: str, history: list[dict] | None) -> str:
        """A question that stands on its own, for retrieval."""
        previous = [m["content"] for m in (history or []) if m.get("role") == "user"]
        if self.cfg.condense == "off" or not previous:
            return question
        if self.cfg.condense == "llm" and self.backend is not None:
            rewritten = self.backend.complete(condense_messages(question, history),
                                              GenerationSettings(temperature=0, max_tokens=48, stop=["\n"])).text
            if rewritten.strip():
                return rewritten.strip()
        swapped = swap_frame(previous[-1], question)
        if swapped:  # "How do I read a CSV file into R?" + "And how do I write one?"
            return swapped
        if _FOLLOW_UP.search(question):  # refers back ("it", "that") or continues ("and ...", "what about ...")
            return f"{previous[-1]} {question}"
        return question

    def windows(self, question: str, hits: list[Hit], qvec=None) -> tuple[list[tuple[int, str]], np.ndarray]:
        """Windows of ``sentence_window`` sentences of the hits, (passage n, text), and each one's cosine
        to the question. Instruction-like sentences are left out."""
        windows: list[tuple[int, str]] = []
        for n, hit in enumerate(hits, 1):
            sents = [s for s in split_sentences(hit.text) if len(s) > 15 and not looks_like_instruction(s)]
            for j in range(len(sents)):
                windows.append((n, " ".join(sents[j:j + self.cfg.sentence_window])))
        if not windows:
            return [], np.zeros(0, dtype=np.float32)
        embedder = self.retriever.embedder
        qvec = embedder.encode([question])[0] if qvec is None else qvec
        return windows, embedder.encode([w for _, w in windows]) @ qvec

    def select_quotes(self, question: str, hits: list[Hit], found=None) -> list[Quote]:
        """The sentences (windows of ``sentence_window``) that best answer ``question``.

        score = cosine(sentence, question) + keyword_weight * idf-weighted share of the question's
        terms found in the sentence. Instruction-like sentences are never selected. ``found``: the
        (windows, cosines) :meth:`windows` already computed.
        """
        windows, cosines = found if found is not None else self.windows(question, hits)
        if not windows:
            return []
        index = self.retriever.corpus().index
        q_terms = set(tokenize(question))
        total = sum(index.idf(t) for t in q_terms) or 1.0
        overlap = np.array([sum(index.idf(t) for t in q_terms & set(tokenize(w))) / total for _, w in windows])
        scores = cosines + self.cfg.keyword_weight * overlap
        picked: list[Quote] = []
        for i in np.argsort(-scores):
            n, text = windows[i]
            text = " ".join(text.split())
            if len(text) > MAX_QUOTE:
                text = text[:MAX_QUOTE].rsplit(" ", 1)[0] + " …"
            if any(_similar(text, q.text) for q in picked):
                continue  # overlapping windows, or the same passage in two overlapping chunks
            if picked and self.cfg.quote_same_passage and n != picked[0].n:
                continue
            if picked and scores[i] < self.cfg.quote_ratio * picked[0].score:
                break  # weaker passages were the wrong ones half of the time
            picked.append(Quote(n, text, round(float(scores[i]), 4)))
            if len(picked) >= self.cfg.quotes:
                break
        return picked

    def assess(self, question: str, sources: list[str] | None = None):
        """Retrieve for ``question`` and weigh whether the hits answer it: (hits, (windows, cosines),
        :class:`answerability.Evidence`, probability)."""
        found = self.retriever.search(question, sources)
        windows = self.windows(question, found.hits, found.query_vector)
        evidence = answerability.gather(question, found.hits, found.dense_ids, found.bm25_ids,
                                        self.retriever.corpus().index,
                                        float(windows[1].max()) if len(windows[1]) else 0.0)
        return found.hits, windows, evidence, answerability.probability(evidence)

    # --- the chain ----------------------------------------------------------------------------------
    def stream(self, question: str, history: list[dict] | None = None,
               sources: list[str] | None = None) -> AnswerStream:
        question = check_text("the question", question, "message_chars").strip()
        if not question:
            raise StudioError("the question is empty")
        standalone = self.condense(question, history)
        hits, windows, evidence, chance = self.assess(standalone, sources)
        needed = answerability.threshold() if self.cfg.min_evidence is None else self.cfg.min_evidence
        answerable = bool(hits) and hits[0].score >= self.cfg.min_score and chance >= needed
        quotes = self.select_quotes(standalone, hits, windows) if answerable and self.cfg.style != "generative" else []

        generated: list[str] = []  # the model's part of the answer (citations are parsed there only)
        withheld: list[str] = []  # hybrid: the model's sentences the cited passages do not support

        def pieces() -> Iterator[str]:
            if not answerable:
                yield REFUSAL
                return
            if self.cfg.style != "extractive":
                passages = ([(q.n, q.text) for q in quotes] if self.cfg.style == "hybrid"
                            else [(n, _without_instructions(h.text)) for n, h in enumerate(hits, 1)])
                tag = new_tag(self.delimiter_key or install_secret(), self.settings.seed, question,
                              *(h.id for h in hits))
                # one short paragraph (small models ramble past a blank line); a model that echoes the
                # delimiters or starts a new question has stopped answering
                stops = [*self.settings.stop, *ANSWER_STOPS, f"<{tag}>", f"</{tag}>"]
                settings = replace(self.settings, stop=list(dict.fromkeys(stops)))
                stream = self.backend.stream(answer_messages(question, passages, tag), settings)
                hold = self.cfg.style == "hybrid"  # its sentences are checked before anyone reads them
                for piece in stream:
                    generated.append(piece)
                    if not hold:
                        yield piece
                    if REPEAT_CUT and repetition_cut("".join(generated)) is not None:
                        stream.close()  # the model started over: what follows is the same again
                        break
                if hold:
                    written = "".join(generated)
                    cut = repetition_cut(written) if REPEAT_CUT else None
                    shown, left = self.supported_sentences(written[:cut] if cut is not None else written,
                                                           [hits[q.n - 1].text for q in quotes])
                    generated[:] = [shown] if shown else []
                    withheld.extend(left)
                    if shown:
                        yield shown
            if quotes:
                yield from _quote_lines(quotes, lead="\n\n" if generated else "")

        def finish(text: str) -> AskResult:
            streamed = "".join(generated)
            cut = repetition_cut(streamed) if REPEAT_CUT else None
            model_text = streamed[:cut].rstrip() if cut is not None else streamed
            refused = not answerable or (self.cfg.style == "generative" and REFUSAL.rstrip(".") in model_text)
            # keep a model-written [n] only where its sentence is supported by passage n
            kept = supported_citations(model_text, [h.text for h in hits])
            answer = text if not streamed else text.replace(streamed, drop_citations(model_text, kept), 1)
            order = [*kept, *(q.n for q in quotes)]
            cited = list(dict.fromkeys(order))
            quote_for = {q.n: q.text for q in reversed(quotes)}
            citations = [Citation(n, hits[n - 1].source, hits[n - 1].page, hits[n - 1].chunk, hits[n - 1].text,
                                  quote_for.get(n, ""), hits[n - 1].headers, hits[n - 1].anchor) for n in cited]
            result = AskResult(question, answer.strip(), citations, not refused, None, standalone, hits,
                               evidence=evidence.to_dict(), answerability=round(chance, 4),
                               withheld=" ".join(withheld))
            if not refused:
                self.judge(result, drop_citations(model_text, []).strip() if model_text else answer.strip())
                if (self.cfg.style == "generative" and self.cfg.refuse_unsupported and result.sentences
                        and not any(x["supported"] for x in result.sentences)):
                    result.answerable = False  # the passages were close, but they do not support what was said
                    result.refusal = "unsupported"
            elif not answerable:
                result.refusal = "no passage"
            else:
                result.refusal = "model"
            return result

        return AnswerStream(pieces(), finish)

    def supported_sentences(self, text: str, passages: list[str]) -> tuple[str, list[str]]:
        """(the sentences of ``text`` the groundedness scorer finds supported by ``passages``, joined;
        the others). A sentence with nothing checkable in it ("Sure.") is left out too."""
        sentences = split_sentences(drop_citations(text, []).strip())
        if not sentences or not passages:
            return "", sentences
        context = "\n\n".join(passages)
        scored = get_scorer(self.cfg.groundedness_scorer).score_many([(context, s) for s in sentences])
        keep = [s for s, g in zip(sentences, scored, strict=True)
                if g.sentences and all(x.supported for x in g.sentences)]
        return " ".join(keep), [s for s in sentences if s not in keep]

    def judge(self, result: AskResult, text: str) -> None:
        """Fill the result's groundedness and per-sentence scores: ``text`` against the retrieved chunks."""
        if not claims(text):  # the model claimed nothing of substance: judge the quotes it came with
            text = result.answer
        scored = get_scorer(self.cfg.groundedness_scorer).score("\n\n".join(h.text for h in result.hits), text)
        result.groundedness = scored.score
        result.sentences = [asdict(x) for x in scored.sentences]
        result.scored_text = text

    def ask(self, question: str, history: list[dict] | None = None, sources: list[str] | None = None) -> AskResult:
        return self.stream(question, history, sources).consume()

    def as_runnable(self):
        """The chain as a LangChain Runnable over ``{"question", "history"?, "sources"?}``:
        ``.invoke()`` returns the answer text, ``.stream()`` its pieces (use :meth:`ask` for
        citations and scores)."""
        from langchain_core.runnables import RunnableLambda

        def answer(inp: dict) -> Iterator[str]:
            yield from self.stream(inp["question"], inp.get("history"), inp.get("sources"))

        return RunnableLambda(answer).with_config(run_name="studio_rag")


_LEAD = re.compile(r"^(and|but|also|so|then|ok|okay)\b[\s,]*", re.IGNORECASE)
_BACK = {"one", "ones", "it", "them", "this", "that", "these", "those", "too", "as", "well", "instead"}


def swap_frame(previous: str, question: str) -> str | None:
    """A follow-up that repeats the previous question's frame with a new word and a pronoun, rewritten
    as a whole question: ("How do I read a CSV file into R?", "And how do I write one?") -> "How do I
    write a CSV file into R". None when the follow-up does not have that shape.

    Concatenating the two questions (the fallback) retrieves the first question's passage again: its
    words outnumber the follow-up's one new word.
    """
    prev = previous.strip().rstrip("?.! ").split()
    new = _LEAD.sub("", question.strip()).rstrip("?.! ").split()
    same = 0
    while same < min(len(prev), len(new)) and prev[same].lower() == new[same].lower():
        same += 1
    rest = new[same:]
    core = [w for w in rest if w.lower().strip(",") not in _BACK]
    if same < 2 or not core or len(core) == len(rest) or len(core) > 3 or len(prev) <= same + len(core):
        return None
    return " ".join(prev[:same] + core + prev[same + len(core):])


REPEAT_CUT = True
_UNIT = re.compile(r"[^.!?:\n]+[.!?:]")


def repetition_cut(text: str) -> int | None:
    """Where a model that started repeating itself should have stopped, or None.

    Small models greedy-decoding a short answer sometimes loop ("The answer is: The answer is: ...").
    The cut is the end of the first sentence (or clause ending in ':') of at least 12 characters that
    the text then says again word for word; everything after it is the loop.
    """
    seen: dict[str, int] = {}
    for m in _UNIT.finditer(text):
        key = " ".join(m.group(0).split()).lower()
        if len(key) < 12:
            continue
        if key in seen:
            return seen[key]
        seen[key] = m.end()
    return None


def _without_instructions(text: str) -> str:
    """A passage with its instruction-like sentences taken out (what a generative answer reads)."""
    return " ".join(s for s in split_sentences(text) if not looks_like_instruction(s))


def _similar(a: str, b: str, threshold: float = 0.5) -> bool:
    ta, tb = set(tokenize(a)), set(tokenize(b))
    return bool(ta and tb) and len(ta & tb) / min(len(ta), len(tb)) > threshold


def _quote_lines(quotes: list[Quote], lead: str) -> Iterator[str]:
    if not quotes:
        return
    yield lead + "From the documents:"
    for q in quotes:  # verbatim: a "[n]" inside the quote is the document's text, linked by no front end
        yield f"\n> “{q.text}” [{q.n}]"
