"""Prompt Lab core: answer checks, answer extraction, voting, techniques, caching, the CLI."""

import json
import math

import pytest

from eval import checks
from studio.backends import GenerationSettings
from studio.errors import StudioError
from studio.prompting.extract import extract_answer, vote
from studio.prompting.techniques import TECHNIQUES, PromptCache, Task, build_messages, run_technique
from tests.conftest import run_studio

APPLES = Task("Tom has 3 apples and buys 4 more. How many apples does he have?", kind="number",
              examples=[{"q": "Ann has 2 pens and buys 3 more. How many pens does she have?", "a": "5"}])


@pytest.mark.parametrize("kind, answer, expected, ok", [
    ("exact", "  Paris. ", "paris", True), ("exact", "Paris, France", "Paris", False),
    ("contains", "It is Paris, France", "paris", True), ("regex", "Total: 17 apples", r"\b17\b", True),
    ("numeric", "about 1,250.5 dollars", 1250.5, True), ("numeric", "no number", 3, False),
    ("numeric", "3.14", 3.1416, False), ("json_schema", '{"city": "Paris"}', {"required": ["city"]}, True),
    ("json_schema", '{"town": "Paris"}', {"required": ["city"]}, False), ("json_schema", "{oops", {}, False),
])
def test_answer_checks(kind, answer, expected, ok):
    assert checks.check(kind, answer, expected) is ok


def test_numeric_tolerance_and_json_valid():
    assert checks.numeric("3.14", 3.1416, tol=0.01) and checks.numeric("105", 100, rel=0.05)
    assert checks.check("json_valid", '{"a": 1}') and not checks.check("json_valid", "{a: 1}")
    with pytest.raises(StudioError, match="unknown check"):
        checks.check("fuzzy", "a", "b")


@pytest.mark.parametrize("text, kind, labels, expected", [
    ("Let's think. 3 + 4 = 7 apples. Final answer: 7", "number", None, "7"),
    ("The total is $1,250.50 dollars", "number", None, "1250.5"),
    ("First 12, then 5 more gives 17.", "number", None, "17"),
    ("Answer: 42. Not 41.", "number", None, "42"),
    ("The answer is 7.0", "number", None, "7"),
    ("The answer is (B) because A is too small", "option", None, "B"),
    ("I think A is wrong, so C", "option", None, "C"),
    ("The review sounds negative overall. Final answer: negative", "option", ["positive", "negative"], "negative"),
    ("Final answer: Paris", "text", None, "Paris"),
    # the bundled model's own output (notebook 06): an aside after the stated answer is not the answer
    ("3 + 4 = 7 apples.\nFinal answer: 7\n\nIn this example, the answer is a fraction with a denominator "
     "of 3.", "number", None, "7"),
    ("Paris is the capital. It is big.", "text", None, "Paris is the capital"),
    ("", "number", None, None), ("no digits here", "number", None, None),
])
def test_extracting_final_answers(text, kind, labels, expected):
    assert extract_answer(text, kind, labels) == expected


def test_voting_agreement_and_entropy():
    v = vote(["7", "7", "8", None, "7"])
    assert v["answer"] == "7" and v["agreement"] == 0.6
    assert v["votes"] == {"7": 3, "8": 1, "(no answer)": 1}
    assert v["entropy"] == pytest.approx(-(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2)))
    assert vote(["a", "a"])["entropy"] == 0 and vote(["b", "a"])["answer"] == "b"  # ties: the first seen


@pytest.mark.parametrize("technique", [t for t in TECHNIQUES if t != "generated-knowledge"])
def test_every_technique_builds_a_visible_prompt_with_the_question(technique):
    msgs = build_messages(technique, APPLES)
    assert msgs[-1]["role"] == "user" and APPLES.question in msgs[-1]["content"]
    if technique == "few-shot":
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[1]["content"] == "5"
    if technique in ("cot", "self-consistency"):
        assert "Final answer:" in msgs[0]["content"]
    if technique == "role":
        assert msgs[0]["role"] == "system"
    if technique == "delimiters":
        assert f"\n###\n{APPLES.question}\n###\n" in msgs[0]["content"]


def test_generated_knowledge_has_two_steps():
    first = build_messages("generated-knowledge", APPLES)
    second = build_messages("generated-knowledge", APPLES, knowledge="3 + 4 = 7")
    assert "Do not answer" in first[0]["content"] and "3 + 4 = 7" in second[0]["content"]


def test_techniques_run_on_the_bundled_model(llamacpp):
    cache = PromptCache()
    res = run_technique(llamacpp, APPLES, "zero-shot", cache=cache)
    assert res["answer"] == "7" and res["prompt"][-1]["content"].startswith(APPLES.question)
    sc = run_technique(llamacpp, APPLES, "self-consistency", samples=3, cache=cache)
    assert len(sc["samples"]) == 3 and sum(sc["votes"].values()) == 3
    assert sc["answer"] in sc["votes"] and 0 < sc["agreement"] <= 1
    seeds_differ = len({s["text"] for s in sc["samples"]}) > 1
    assert seeds_differ  # distinct seeds give distinct reasoning paths


def test_json_technique_is_constrained_and_parsed(llamacpp):
    res = run_technique(llamacpp, APPLES, "json", cache=PromptCache(enabled=False))
    assert isinstance(json.loads(res["output"])["answer"], (int, float))
    assert res["answer"] is not None
    with pytest.raises(StudioError, match="at least 2 samples"):
        run_technique(llamacpp, APPLES, "self-consistency", samples=1)


def test_cache_makes_reruns_instant_and_identical(llamacpp):
    cache = PromptCache()
    task = Task("Name a primary colour.", kind="text")
    settings = GenerationSettings(temperature=0.9, max_tokens=20, seed=3)
    first = run_technique(llamacpp, task, "zero-shot", settings, cache=cache)
    again = run_technique(llamacpp, task, "zero-shot", settings, cache=cache)
    assert again["cached"] and again["output"] == first["output"]
    fresh = run_technique(llamacpp, task, "zero-shot", settings, cache=PromptCache(enabled=False))
    assert fresh["output"] == first["output"]  # the same seed gives the same output without the cache too


def test_cli_prompt_run_contract():
    out = run_studio("prompt", "run", APPLES.question, "--technique", "self-consistency", "--samples", "3",
                     "--kind", "number", "--json")
    data = json.loads(out.stdout)
    assert {"technique", "answer", "samples", "votes"} <= set(data)
    assert data["technique"] == "self-consistency" and len(data["samples"]) == 3
    assert sum(data["votes"].values()) == 3


def test_json_output_is_validated_against_the_users_schema(llamacpp):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    task = Task("Extract the name and age: John is 25 years old.", kind="text", schema=schema)
    res = run_technique(llamacpp, task, "json", cache=PromptCache(enabled=False))
    assert res["valid_json"] is True and json.loads(res["output"])["age"] == 25


def test_library_bench_scores_a_table(llamacpp, tmp_path):
    from studio.config import load_config
    from studio.prompting.bench import PromptSuite, run_bench, score

    suite = load_config(PromptSuite, "configs/prompts/capitals.yaml")
    suite.tasks = suite.tasks[:2]
    res = run_bench([suite], ["zero-shot", "role"], llamacpp, samples=2)
    assert set(res["table"]) == {"zero-shot", "role"} and 0 <= res["table"]["role"]["capitals"] <= 1
    assert len(res["cases"]) == 4 and all(c["correct"] in (True, False) for c in res["cases"])
    extraction = load_config(PromptSuite, "configs/prompts/extraction.yaml")
    assert score(extraction, {"output": 'Sure: {"name": "John", "age": 25}', "answer": None},
                 {"name": "John", "age": 25})
    assert not score(extraction, {"output": "not json", "answer": None}, {"name": "John", "age": 25})
