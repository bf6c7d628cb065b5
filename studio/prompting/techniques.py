"""Prompt techniques as small builders of chat messages, and a cached runner.

>>> task = Task("Tom has 3 apples and buys 4 more. How many apples does he have?", kind="number")
>>> run_technique(load_backend("llamacpp"), task, "self-consistency", samples=5)
{"technique": ..., "prompt": [...], "answer": "7", "samples": [...], "votes": {"7": 4, "6": 1}, ...}

Techniques: zero-shot, few-shot (the task's examples as earlier turns), cot (reason, then
"Final answer: ..."), self-consistency (cot sampled N times with seeds seed..seed+N-1, majority
vote), role (a persona in the system prompt), delimiters (the task between ### markers),
json (output constrained to a JSON schema where the backend can), generated-knowledge (the
model first writes facts, then answers with them). The exact final prompt is always returned.
Results are cached per (model, messages, settings, seed) under ``$STUDIO_HOME/cache/prompts``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

from studio.backends.base import ChatBackend, GenerationSettings
from studio.env import home_dir
from studio.errors import StudioError
from studio.limits import check_int, check_text
from studio.limits import current as current_limits
from studio.prompting.extract import extract_answer, vote

TECHNIQUES = ("zero-shot", "few-shot", "cot", "self-consistency", "role", "delimiters", "json",
              "generated-knowledge")
FORMAT = {"number": "Answer with a number.", "text": "Answer briefly.", "option": "Answer with one of: {labels}."}
ROLES = {"number": "You are a careful math teacher who checks every calculation.",
         "option": "You are a precise annotator who always picks exactly one label.",
         "text": "You are a knowledgeable expert who answers in a few words."}


@dataclass
class Task:
    """A question, the kind of answer it wants, and optional examples, labels, persona, schema."""

    question: str
    kind: str = "text"  # number | option | text
    labels: list[str] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)  # [{"q": ..., "a": ...}]
    role: str | None = None
    schema: dict | None = None

    def hint(self) -> str:
        return FORMAT[self.kind].format(labels=", ".join(self.labels))


def build_messages(technique: str, task: Task, knowledge: str | None = None) -> list[dict[str, str]]:
    """The chat messages a technique sends (for generated-knowledge: the answering step)."""
    q, hint = task.question.strip(), task.hint()
    if technique in ("zero-shot", "json"):
        msgs = [{"role": "user", "content": f"{q}\n{hint}"}]
        if technique == "json":
            schema = json.dumps(task.schema or default_schema(task))
            msgs.insert(0, {"role": "system", "content": f"Reply with JSON only, matching this schema: {schema}"})
        return msgs
    if technique == "few-shot":
        if not task.examples:
            raise StudioError("few-shot needs examples: give the task some {q, a} pairs")
        turns = []
        for ex in task.examples:
            turns += [{"role": "user", "content": f"{ex['q']}\n{hint}"},
                      {"role": "assistant", "content": str(ex["a"])}]
        return [*turns, {"role": "user", "content": f"{q}\n{hint}"}]
    if technique in ("cot", "self-consistency"):
        return [{"role": "user", "content": f"{q}\nThink step by step. Then write the final answer on the last "
                                            f"line as 'Final answer: ...'. {hint}"}]
    if technique == "role":
        return [{"role": "system", "content": task.role or ROLES[task.kind]},
                {"role": "user", "content": f"{q}\n{hint}"}]
    if technique == "delimiters":
        return [{"role": "user", "content": f"The task is between ### markers.\n###\n{q}\n###\n{hint}"}]
    if technique == "generated-knowledge":
        if knowledge is None:
            return [{"role": "user", "content": f"Write three short facts that help answer this question. "
                                                f"Do not answer it.\nQuestion: {q}"}]
        return [{"role": "user", "content": f"Facts:\n{knowledge}\n\nUsing the facts, answer: {q}\n{hint}"}]
    raise StudioError(f"unknown technique {technique!r}; choose one of: {', '.join(TECHNIQUES)}")


def default_schema(task: Task) -> dict:
    kind = {"number": {"type": "number"}, "option": {"type": "string", "enum": task.labels} if task.labels
            else {"type": "string"}, "text": {"type": "string"}}[task.kind]
    return {"type": "object", "properties": {"answer": kind}, "required": ["answer"]}


class PromptCache:
    """JSON files keyed by a hash of (model, messages, settings): a rerun is instant and identical."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.dir = home_dir("cache", "prompts") if enabled else None

    def key(self, backend: ChatBackend, messages: list[dict], settings: GenerationSettings) -> str:
        blob = json.dumps([backend.name, backend.model_name, messages, dataclasses.asdict(settings)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def complete(self, backend: ChatBackend, messages: list[dict], settings: GenerationSettings) -> dict:
        path = self.dir / f"{self.key(backend, messages, settings)}.json" if self.enabled else None
        if path and path.exists():
            return {**json.loads(path.read_text()), "cached": True}
        stream = backend.complete(messages, settings)
        out = {"text": stream.text, "completion_tokens": stream.completion_tokens, "seconds": stream.seconds}
        if path:
            path.write_text(json.dumps(out))
        return {**out, "cached": False}


def _answer_of(text: str, task: Task, technique: str) -> str | None:
    if technique == "json":
        try:
            obj = json.loads(text)
        except ValueError:
            return None  # invalid output never crashes the lab: it just has no answer
        if not isinstance(obj, dict):
            return None
        if "answer" not in obj:  # a task schema of its own (extraction): the object is the answer
            return json.dumps(obj, sort_keys=True)
        return None if obj["answer"] is None else extract_answer(str(obj["answer"]), task.kind, task.labels or None)
    return extract_answer(text, task.kind, task.labels or None)


def run_technique(backend: ChatBackend, task: Task, technique: str, settings: GenerationSettings | None = None,
                  samples: int = 5, cache: PromptCache | None = None) -> dict:
    """Run one technique on one task; returns prompt, output(s), answer, votes, tokens and time."""
    settings = settings or GenerationSettings(temperature=0.0, max_tokens=256)
    if technique not in TECHNIQUES:
        raise StudioError(f"unknown technique {technique!r}; choose one of: {', '.join(TECHNIQUES)}")
    check_text("the task", task.question, "message_chars")
    if technique == "self-consistency":
        if not isinstance(samples, int) or samples < 2:
            raise StudioError("self-consistency needs at least 2 samples")
        check_int("samples", samples, 2, current_limits().self_consistency_samples, "self_consistency_samples")
    cache = cache or PromptCache()
    start = time.perf_counter()
    if technique == "json":
        if not backend.supports_json_schema:
            raise StudioError(f"the {backend.name} backend cannot constrain JSON; use llamacpp or openai")
        settings = dataclasses.replace(settings, json_schema=task.schema or default_schema(task))
    knowledge = None
    steps = []
    if technique == "generated-knowledge":
        facts = cache.complete(backend, build_messages(technique, task), settings)
        knowledge, steps = facts["text"].strip(), [facts]
    messages = build_messages(technique, task, knowledge)
    if technique == "self-consistency":
        temp = settings.temperature if settings.temperature > 0 else 0.7
        outs = [cache.complete(backend, messages,
                               dataclasses.replace(settings, temperature=temp, seed=settings.seed + i))
                for i in range(samples)]
    else:
        outs = [cache.complete(backend, messages, settings)]
    answers = [_answer_of(o["text"], task, technique) for o in outs]
    voted = vote(answers)
    result = {
        "technique": technique, "prompt": messages, "answer": voted["answer"], "output": outs[0]["text"],
        "samples": [{"text": o["text"], "answer": a} for o, a in zip(outs, answers, strict=True)]
        if technique == "self-consistency" else [],
        "votes": voted["votes"] if technique == "self-consistency" else {},
        "agreement": voted["agreement"], "entropy": voted["entropy"],
        "completion_tokens": sum(o["completion_tokens"] for o in steps + outs),
        "seconds": round(time.perf_counter() - start, 3), "cached": all(o["cached"] for o in steps + outs),
    }
    if knowledge is not None:
        result["knowledge"] = knowledge
    if technique == "json":  # constrained where the backend can; validated always
        from eval.checks import json_schema

        result["valid_json"] = json_schema(outs[0]["text"], settings.json_schema)
    return result
