"""Pull the final answer out of a model's reasoning, and vote over several samples.

``extract_answer(text, kind)`` with kind ``number`` (the stated final answer, else the last
number), ``option`` (a letter A-E or one of the allowed labels) or ``text`` (the line after
"answer:", else the first sentence), normalized so votes compare like with like.

Voting: the majority answer, its agreement (count / N) and the entropy of the vote
H = -sum_a p(a) log2 p(a) (0 bits when all samples agree).
"""

from __future__ import annotations

import math
import re
from collections import Counter

_FINAL = re.compile(r"(?:final answer|the answer is|answer)\s*(?:is)?\s*[:=]?\s*(.+)", re.IGNORECASE)
# a stated "Final answer:" wins over a later "the answer is ..." in an aside
# ("Final answer: 7 ... the answer is a fraction with a denominator of 3" is 7)
_STATED = re.compile(r"final answer\s*(?:is)?\s*[:=]?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_OPTION = re.compile(r"\b\(?([A-E])\)?(?=[\s.,:;)]|$)")


def _clean_number(token: str) -> str:
    value = float(token.replace(",", "").replace("$", ""))
    return str(int(value)) if value.is_integer() else f"{value:g}"


def extract_answer(text: str, kind: str = "text", labels: list[str] | None = None) -> str | None:
    """The final answer in ``text`` as a normalized string, or None when there is none."""
    text = (text or "").strip()
    if not text:
        return None
    finals = _STATED.findall(text) or _FINAL.findall(text)
    tail = finals[-1] if finals else None
    if kind == "number":
        for place in ([tail] if tail else []) + [text]:
            numbers = _NUMBER.findall(place)
            if numbers:
                return _clean_number(numbers[0] if place is tail else numbers[-1])
        return None
    if kind == "option":
        if labels:
            lowered = (tail or text).lower()
            hits = [(lowered.rfind(lab.lower()), lab) for lab in labels if lab.lower() in lowered]
            if hits:
                return max(hits)[1] if tail is None else min(hits)[1]
            return None
        m = _OPTION.findall(tail or text)
        return (m[0] if tail else m[-1]) if m else None
    answer = tail or re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return " ".join(answer.split()).strip(" .\"'*`") or None


def vote(answers: list[str | None]) -> dict:
    """Majority vote over extracted answers (None = no answer, counted as its own bucket)."""
    counts = Counter(a if a is not None else "(no answer)" for a in answers)
    n = sum(counts.values())
    if not n:
        return {"answer": None, "votes": {}, "agreement": 0.0, "entropy": 0.0}
    # ties go to the answer that appeared first, so the result does not depend on dict order
    order = {a: i for i, a in reversed(list(enumerate(a if a is not None else "(no answer)" for a in answers)))}
    best = max(counts, key=lambda a: (counts[a], -order[a]))
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return {"answer": None if best == "(no answer)" else best, "votes": dict(counts),
            "agreement": counts[best] / n, "entropy": round(entropy + 0.0, 6)}
