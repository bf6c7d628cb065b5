"""The Eval tab's handlers called as the page calls them, with plain dicts: no browser, no server.

Suites come from configs/eval/answers_demo.yaml (answers written beforehand: no model run). What only a
browser shows (the highlighted answers and the plot drawn) stays in tests/test_ui_eval.py.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd
import pytest

from studio.backends import BackendCache
from studio.paths import Roots, uploads_dir
from studio.ui import eval_tab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services():
    return eval_tab.EvalServices(Roots.for_server(), BackendCache(), eval_tab.suite_files())


@pytest.fixture()
def upload_dir():
    """A suite file as an upload lands: in the studio's upload folder."""
    return uploads_dir()


def request(**changes) -> dict:
    return {"suite": "answers_demo", "upload": None, "overrides": "", "baseline": eval_tab.NO_BASELINE, **changes}


def test_the_endpoint_takes_the_values_in_the_pages_order():
    # tests/test_security.py and API clients call /eval_run positionally in this order
    assert eval_tab.REQUEST == ["suite", "upload", "overrides", "baseline"]


def test_a_run_of_answers_demo_returns_summary_table_and_plot(services):
    steps = []
    out = eval_tab.run_eval(request(), services=services,
                            progress=lambda p, desc=None, unit="steps": steps.append((p, desc)))
    assert set(out) == set(eval_tab.SHOWN)
    assert "Suite passed" in out["summary"] and "answers_demo" in out["summary"] and "4 cases" in out["summary"]
    assert "| groundedness |" in out["summary"] and "Run folder: `$STUDIO_HOME/eval/answers_demo-" in out["summary"]
    cases = out["cases"]
    assert isinstance(cases, pd.DataFrame)
    assert cases["case"].tolist() == ["seq-faithful", "seq-number-changed", "solve-faithful", "solve-added-claim"]
    assert {"groundedness", "context_recall", "contains", "this case", "unsupported sentences"} <= set(cases.columns)
    assert "Hadley Wickham" in cases.set_index("case")["unsupported sentences"]["seq-number-changed"]
    assert out["plot"].__class__.__name__ == "Figure" and len(out["plot"].axes) == 2
    assert "id='eval-case-seq-number-changed'" in out["answers"] and "class='unsupported'" in out["answers"]
    assert out["compared"] == ""  # no baseline
    run = out["summary"].split("Run folder: `")[1].split("`")[0].rsplit("/", 1)[-1]
    assert out["baseline"]["choices"][:2] == [eval_tab.NO_BASELINE, run]  # this run is the newest
    assert steps[0] == (0, "starting") and steps[-1][0] == (4, 4)


def test_a_second_run_compares_with_the_first(services):
    eval_tab.run_eval(request(), services=services)
    first = eval_tab.earlier_runs()[0]
    out = eval_tab.run_eval(request(baseline=first), services=services)
    assert out["compared"].startswith(f"**Against {first}: 0 regression(s)**")
    assert len(out["plot"].axes[0].patches) == 2 * 3  # earlier and this run's bars for the three metrics
    assert first in out["baseline"]["choices"]


def test_refresh_lists_the_runs_newest_first(services):
    eval_tab.run_eval(request(), services=services)
    assert eval_tab.refresh_runs({}) == {"baseline": gr.update(choices=[eval_tab.NO_BASELINE,
                                                                        *eval_tab.earlier_runs()])}


@pytest.mark.parametrize("changes", [{"suite": None}, {"suite": ""}, {"suite": "no_such_suite"}])
def test_no_suite_is_refused(services, changes):
    with pytest.raises(gr.Error, match="Pick a suite or upload a suite file"):
        eval_tab.run_eval(request(**changes), services=services)


def test_an_unknown_baseline_run_is_refused_before_running(services):
    before = eval_tab.earlier_runs()
    for base in ("no-such-run", "../..", ""):
        with pytest.raises(gr.Error, match="the earlier run must be one of"):
            eval_tab.run_eval(request(baseline=base), services=services)
    assert eval_tab.earlier_runs() == before  # nothing ran


def test_paths_outside_the_allowed_folders_are_refused(services, tmp_path, upload_dir):
    with pytest.raises(gr.Error, match="outside the folders"):  # an override naming a file
        eval_tab.run_eval(request(overrides="documents=/etc/passwd"), services=services)
    named = upload_dir / "sneaky.yaml"  # an uploaded suite naming one
    named.write_text("name: sneaky\npipeline: answers\nmetrics: [contains]\ndataset: /etc/passwd\n")
    with pytest.raises(gr.Error, match="outside the folders") as err:
        eval_tab.run_eval(request(upload=str(named)), services=services)
    assert "root:" not in str(err.value) and str(upload_dir) not in str(err.value)
    outside = tmp_path / "elsewhere.yaml"  # a suite file that is not an upload
    outside.write_text("name: elsewhere\npipeline: answers\nmetrics: [contains]\n"
                       "cases: [{question: q, answer: a, expected: a}]\n")
    with pytest.raises(gr.Error, match="suite file .* is outside the folders"):
        eval_tab.run_eval(request(upload=str(outside)), services=services)


def test_an_uploaded_suite_cannot_escape_with_its_name(services, upload_dir, studio_home):
    suite = upload_dir / "escape.yaml"
    suite.write_text("name: ../../../escaped\npipeline: answers\nmetrics: [contains]\n"
                     "cases: [{question: q, answer: a, expected: a}]\n")
    with pytest.raises(gr.Error, match="suite name"):
        eval_tab.run_eval(request(upload=str(suite)), services=services)
    assert not list(studio_home.parent.glob("escaped*"))


def test_an_uploaded_suite_runs_instead_of_the_picked_one(services, upload_dir):
    suite = upload_dir / "mine.yaml"
    suite.write_text("name: mine\npipeline: answers\nmetrics: [contains]\n"
                     "cases: [{id: one, question: q, answer: the answer is a, expected: a}]\n")
    out = eval_tab.run_eval(request(upload=str(suite)), services=services)
    assert "\nmine · 1 cases" in out["summary"] and out["cases"]["case"].tolist() == ["one"]


def test_bad_overrides_are_refused_with_a_sentence(services):
    with pytest.raises(gr.Error, match="unknown key 'no_such_key'") as err:
        eval_tab.run_eval(request(overrides="no_such_key=1"), services=services)
    assert str(eval_tab.SUITES) not in str(err.value)  # the server's folders are not named
    with pytest.raises(gr.Error, match="limits.message_chars"):
        eval_tab.run_eval(request(overrides="x" * 100_000), services=services)


def test_one_answer_is_scored_with_its_sentences_shaded():
    out = eval_tab.score_answer({"context": "Angel Falls in Venezuela is 979 metres high.",
                                 "answer": "Angel Falls is 979 metres high. It was first climbed by Neil Armstrong.",
                                 "scorer": "judge"})
    assert list(out) == ["grounded"]
    shown = out["grounded"]
    assert "1 of 2 sentences not supported" in shown and "groundedness <b>" in shown
    assert "<span class='unsupported'" in shown and "Neil Armstrong" in shown.split("class='unsupported'")[1]


@pytest.mark.parametrize("changes, says", [
    ({"context": ""}, "Give both a context and an answer"),
    ({"answer": "   "}, "Give both a context and an answer"),
    ({"scorer": "oracle"}, "scorer must be one of"),
    ({"scorer": "nli:/etc"}, "scorer must be one of"),  # a model folder is for the CLI only
    ({"answer": "x" * 100_000}, "limits.message_chars"),
])
def test_scoring_refuses_empty_or_bad_values(changes, says):
    v = {"context": "The sky is blue.", "answer": "The sky is blue.", "scorer": "lexical", **changes}
    with pytest.raises(gr.Error, match=says):
        eval_tab.score_answer(v)
