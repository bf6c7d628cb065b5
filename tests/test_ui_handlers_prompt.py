"""The Prompt Lab's handlers called as the page calls them, with plain dicts: no browser, no server.

The bundled llamacpp model answers (through studio.backends.BackendCache, as in the app). What only a
browser shows (the vote chart drawn, the table rendered) stays in tests/test_ui_prompt.py.
"""

from __future__ import annotations

import html
import json
import re

import gradio as gr
import pytest

from studio.backends import BackendCache
from studio.config import StudioConfig
from studio.ui import prompt_tab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services():
    return prompt_tab.PromptServices(StudioConfig(), BackendCache(), prompt_tab.library())


def request(**changes) -> dict:
    """The values the page sends on "Run side by side", with the tab's defaults."""
    v = {"task_pick": prompt_tab.OWN_TASK,
         "question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "kind": "number",
         "expected": "7", "labels": "",
         "examples": "Ann has 2 pens and buys 3 more. How many pens does she have? => 5",
         "schema": prompt_tab.DEFAULT_SCHEMA, "techniques": ["zero-shot"], "samples": 5, "temperature": 0.7,
         "top_p": 0.95, "top_k": 40, "seed": 0}
    return {**v, **changes}


def test_the_endpoint_takes_the_values_in_the_pages_order():
    # tests/test_security.py and API clients call /prompt_run positionally in this order
    assert prompt_tab.REQUEST == ["task_pick", "question", "kind", "expected", "labels", "examples", "schema",
                                  "techniques", "samples", "temperature", "top_p", "top_k", "seed", "adapter"]


def test_a_technique_run_fills_the_results_table(services):
    steps = []
    out = prompt_tab.run_techniques(request(techniques=["zero-shot", "few-shot"]), services=services,
                                    progress=lambda p, desc=None: steps.append((p, desc)))
    assert set(out) == {"table", "votes", "vote_stats", "details"}
    assert [row[0] for row in out["table"]] == ["zero-shot", "few-shot"]
    for _technique, answer, correct, tokens, seconds, cached in out["table"]:
        # scored against the expected 7 (a 135M model is not always right)
        assert correct == ("yes" if answer == "7" else "no") and tokens > 0 and seconds >= 0 and cached in ("", "yes")
    assert steps == [((0, 2), "zero-shot"), ((1, 2), "few-shot")]
    assert "#### zero-shot" in out["details"] and "**user**: Tom has 3 apples" in out["details"]
    assert "#### few-shot" in out["details"] and "**assistant**: 5" in out["details"]  # the example turn
    # no self-consistency: the chart and its line are emptied
    assert out["votes"] == "" and out["vote_stats"] == ""


def bars(chart: str) -> dict[str, tuple[int, float]]:
    """answer -> (votes, bar width in %) read back from the vote chart's HTML, in the order shown."""
    rows = re.findall(r"vote-answer'>(.*?)</span>.*?width:([\d.]+)%.*?vote-count'>(\d+) vote", chart)
    return {html.unescape(a): (int(n), float(w)) for a, w, n in rows}


def test_self_consistency_fills_the_vote_chart_with_every_answer(services):
    out = prompt_tab.run_techniques(request(techniques=["self-consistency"], samples=3), services=services)
    chart = bars(out["votes"])
    assert sum(n for n, _ in chart.values()) == 3  # every sample's answer is a bar (or adds to one)
    row = out["table"][0]
    assert row[0] == "self-consistency" and row[1] in chart
    assert chart[row[1]][0] == max(n for n, _ in chart.values())  # the majority is the answer
    assert f"majority **{row[1]}**" in out["vote_stats"] and "over 3 samples" in out["vote_stats"]
    assert out["vote_stats"].count("\n1. ") + out["vote_stats"].count("\n2. ") + out["vote_stats"].count("\n3. ") == 3
    assert "Final answer" in out["details"]


def test_the_vote_chart_shows_every_answer_from_zero_in_numeric_order():
    chart = bars(prompt_tab.votes_html({"120": 1, "2": 1, "1": 1, "x": 1, "10.5": 1}, 5))
    assert list(chart) == ["1", "2", "10.5", "120", "x"]  # numbers by value, then words
    assert all(n == 1 and abs(w - 20.0) < 0.01 for n, w in chart.values())  # one vote of five is a fifth
    two = bars(prompt_tab.votes_html({"7": 4, "6": 1}, 5))
    assert two == {"6": (1, 20.0), "7": (4, 80.0)}
    assert "&lt;b&gt;" in prompt_tab.votes_html({"<b>": 1}, 1)  # an answer is text, never markup


def test_no_expected_answer_leaves_correct_blank(services):
    out = prompt_tab.run_techniques(request(expected="  "), services=services)
    assert out["table"][0][2] == ""


def test_a_technique_the_core_refuses_gets_an_error_row_and_the_others_run(services):
    out = prompt_tab.run_techniques(request(techniques=["self-consistency", "zero-shot"], samples=10**6),
                                    services=services)
    refused, ran = out["table"]
    assert refused[0] == "self-consistency" and refused[1].startswith("error: ")
    assert "limits.self_consistency_samples" in refused[1] and refused[3:5] == [0, 0]
    assert ran[0] == "zero-shot" and ran[2] in ("yes", "no") and ran[3] > 0
    assert out["votes"] == "" and out["vote_stats"] == ""


@pytest.mark.parametrize("changes", [{"question": "   "}, {"techniques": []}, {"techniques": None}])
def test_no_task_or_no_technique_is_refused(services, changes):
    with pytest.raises(gr.Error, match="Write a task and choose at least one technique"):
        prompt_tab.run_techniques(request(**changes), services=services)


@pytest.mark.parametrize("changes, says", [
    ({"techniques": ["zero-shot", "jailbreak"]}, "technique must be one of"),
    ({"kind": "poem"}, "answer kind must be one of"),
    ({"samples": "many"}, "samples must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"top_k": "x"}, "top-k must be a whole number"),
    ({"question": "x" * 100_000}, "limits.message_chars"),
    ({"schema": "{not json"}, "The JSON schema is not valid JSON"),
    ({"schema": json.dumps({"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(3000)}})},
     "json_schema_chars"),
])
def test_bad_values_are_refused_before_any_model_runs(services, changes, says):
    with pytest.raises(gr.Error, match=says):
        prompt_tab.run_techniques(request(**changes), services=services)


def test_a_deeply_nested_schema_is_refused_by_the_core(services):
    nested: dict = {"type": "object"}
    for _ in range(20):
        nested = {"type": "object", "properties": {"a": nested}}
    with pytest.raises(gr.Error, match="json_schema_depth"):
        prompt_tab.run_techniques(request(schema=json.dumps(nested), techniques=["json"]), services=services)


def test_picking_a_library_task_fills_the_form(services):
    name = next(n for n in services.tasks if n.startswith("arithmetic: Mia"))
    filled = prompt_tab.pick_task({"task_pick": name}, services=services)
    assert filled["question"].startswith("Mia had 10 stickers") and filled["kind"] == "number"
    assert filled["expected"] == "6" and filled["labels"] == ""
    assert "Ann has 2 pens and buys 3 more. How many pens does she have? => 5" in filled["examples"]
    # your own task (or anything not in the library) leaves the form as it is
    assert prompt_tab.pick_task({"task_pick": prompt_tab.OWN_TASK}, services=services) == {}
    assert prompt_tab.pick_task({"task_pick": "no such task"}, services=services) == {}


def test_a_library_task_is_scored_by_its_suites_check(services):
    name = next(n for n in services.tasks if n.startswith("sentiment:"))
    suite, item = services.tasks[name]
    form = prompt_tab.pick_task({"task_pick": name}, services=services)
    req = prompt_tab.lab_request(request(task_pick=name, **form), services=services)
    assert req.suite.check == suite.check and req.suite.kind == suite.kind == "option"
    assert req.task.labels == suite.labels and req.expected == str(item["expected"])


def test_the_library_run_makes_the_accuracy_table(services, tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text("name: tiny\nkind: number\ncheck: numeric\n"
                                        "tasks:\n  - {q: 'What is 2 + 2?', expected: 4}\n")
    monkeypatch.setattr(prompt_tab, "LIBRARY", tmp_path)
    out = prompt_tab.run_library({"techniques": ["zero-shot"], "samples": 2, "seed": 0}, services=services)
    assert list(out) == ["library_table"]
    table = out["library_table"]
    assert list(table.columns) == ["technique", "tiny", "seconds"] and table["technique"].tolist() == ["zero-shot"]
    assert 0 <= table["tiny"][0] <= 1


@pytest.mark.parametrize("changes, says", [
    ({"techniques": []}, "Choose at least one technique"),
    ({"techniques": ["nope"]}, "technique must be one of"),
    ({"samples": None}, "samples must be a whole number"),
])
def test_the_library_run_refuses_bad_values(services, changes, says):
    with pytest.raises(gr.Error, match=says):
        prompt_tab.run_library({"techniques": ["zero-shot"], "samples": 5, "seed": 0, **changes}, services=services)


def test_an_expected_answer_of_the_wrong_kind_is_refused_with_a_sentence():
    from studio.prompting.bench import PromptSuite
    from studio.ui.prompt_tab import _expected

    with pytest.raises(gr.Error, match="must be a number"):
        _expected("seven", PromptSuite(kind="number", check="numeric"))
    with pytest.raises(gr.Error, match="JSON object"):
        _expected("{broken", PromptSuite(check="json_fields"))
    assert _expected("7", PromptSuite(kind="number", check="numeric")) == 7.0
