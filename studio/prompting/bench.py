"""The technique x task table: run techniques over a task library and score the answers.

A library file (``configs/prompts/*.yaml``) maps onto :class:`PromptSuite`: the answer kind,
labels, the check that scores an answer (see :mod:`eval.checks`; ``json_fields`` compares the
fields of the first JSON object in the output), few-shot examples and the tasks with their
expected answers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from eval import checks
from studio.backends.base import ChatBackend, GenerationSettings
from studio.prompting.techniques import PromptCache, Task, run_technique
from studio.schema import config_class

_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


@config_class
@dataclass
class PromptSuite:
    """A family of tasks with expected answers (``configs/prompts/*.yaml``)."""

    name: str = "tasks"
    kind: Literal["number", "option", "text"] = "text"
    labels: list[str] = field(default_factory=list)
    check: Literal["exact", "contains", "regex", "numeric", "json_fields"] = field(default="exact", metadata={
        "help": "exact | contains | regex | numeric | json_fields"})
    examples: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    schema: dict | None = None
    role: str | None = None

    def task(self, item: dict) -> Task:
        return Task(item["q"], self.kind, list(self.labels), list(self.examples), self.role, self.schema)


def first_json_object(text: str) -> dict | None:
    for candidate in _OBJECT.findall(text or ""):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def score(suite: PromptSuite, result: dict, expected: Any) -> bool:
    """Whether a technique's result answers the task right, by the suite's check."""
    if suite.check == "json_fields":
        obj = first_json_object(result["output"])
        return obj is not None and all(checks.normalize(str(obj.get(k))) == checks.normalize(str(v))
                                       for k, v in expected.items())
    answer = result["answer"]
    return answer is not None and checks.check(suite.check, answer, expected)


def run_bench(suites: list[PromptSuite], techniques: list[str], backend: ChatBackend,
              settings: GenerationSettings | None = None, samples: int = 5, cache: PromptCache | None = None,
              progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Accuracy per technique and suite, wall time per technique, and every case."""
    settings = settings or GenerationSettings(temperature=0.0, max_tokens=256)
    cache = cache or PromptCache()
    total = len(techniques) * sum(len(s.tasks) for s in suites)
    done = 0
    table: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    cases = []
    for technique in techniques:
        table[technique] = {}
        start = time.perf_counter()
        for suite in suites:
            right = 0
            for item in suite.tasks:
                res = run_technique(backend, suite.task(item), technique, settings, samples, cache)
                ok = score(suite, res, item["expected"])
                right += ok
                cases.append({"technique": technique, "suite": suite.name, "q": item["q"],
                              "expected": item["expected"], "answer": res["answer"], "correct": ok,
                              "seconds": res["seconds"], "completion_tokens": res["completion_tokens"]})
                done += 1
                if progress:
                    progress(done, total, f"{technique} · {suite.name}")
            table[technique][suite.name] = right / len(suite.tasks) if suite.tasks else 0.0
        seconds[technique] = round(time.perf_counter() - start, 2)
    return {"table": table, "seconds": seconds, "cases": cases}
