"""The core and handler pieces behind the everyday-use fixes, without a browser: queue positions and job
logs, progress lines, session truncation, URLs in quotes, cited pages rendered, the Eval summary's
words, the mixture's sliders, the importance-sampling density line and the MCMC cap's note."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from studio.errors import StudioError
from tests.pdfgen import make_pdf


# --- jobs -------------------------------------------------------------------------------------------------
@pytest.fixture()
def registry(tmp_path, monkeypatch):
    from studio import jobs as jobs_mod
    from studio.ui import jobs_ui

    reg = jobs_mod.Jobs(tmp_path / "jobs.sqlite", max_running=1)
    monkeypatch.setattr(jobs_ui, "jobs", lambda user=None: reg)
    return reg


def test_a_queued_job_knows_its_place_and_what_it_waits_behind(registry, tmp_path):
    running = registry.register("generate", ["x"], tmp_path / "a", state="running", pid=os.getpid())
    time.sleep(0.01)
    q1 = registry.register("generate", ["x"], tmp_path / "b")
    time.sleep(0.01)
    q2 = registry.register("finetune", ["x"], tmp_path / "c")
    assert registry.queue_position(q1.id)[0] == 1 and registry.queue_position(q2.id)[0] == 2
    assert registry.queue_position(q2.id)[1].id == running.id
    assert registry.queue_position(running.id) == (0, None)
    from studio.ui.jobs_ui import progress_line

    line = progress_line(registry.get(q2.id), {})
    assert line == f"Queued behind job {running.id} (a); starts when it ends (position 2 in the queue)."
    registry.finish(q1.id, "cancelled")
    assert registry.queue_position(q2.id)[0] == 1  # the queue moves up
    assert progress_line(registry.get(q1.id), {}) == "Cancelled; it never started."


def test_a_running_job_shows_elapsed_time_and_an_eta_from_its_pace(registry, tmp_path):
    from studio.ui.jobs_ui import clock, progress_line

    job = registry.register("generate", ["x"], tmp_path / "a", state="running", pid=os.getpid())
    now = job.started + 100
    assert progress_line(job, {"step": 0, "steps": 1000}, now) == "Running for 1:40 · ETA after the first steps."
    line = progress_line(job, {"step": 250, "steps": 1000}, now)  # 100 s for 250 steps: 300 s to go
    assert line.startswith("Running for 1:40 · about 5:00 left (ETA ")
    assert clock(3725) == "1:02:05" and clock(59.6) == "1:00"
    registry.finish(job.id, "finished")
    ended = registry.get(job.id)
    assert progress_line(ended, {}).startswith("Finished after ")


def test_the_job_log_is_the_last_lines_with_progress_bar_redraws_folded(registry, tmp_path):
    job = registry.register("finetune", ["x"], tmp_path / "a")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "job.log").write_bytes(b"".join(b"line %d\n" % i for i in range(500))
                                             + b" 10%|#  | 1/10\r 50%|#####  | 5/10\r100%|##########| 10/10\n")
    log = registry.log(job.id, n=5)
    assert log.splitlines() == ["line 496", "line 497", "line 498", "line 499", "100%|##########| 10/10"]
    assert "50%" not in log and "line 495" not in log
    assert registry.log(registry.register("x", [], tmp_path / "none").id) == ""


# --- sessions, links --------------------------------------------------------------------------------------
def test_truncate_drops_the_last_turn_and_new_messages_follow(tmp_path):
    from studio.rag.sessions import Sessions

    s = Sessions(tmp_path / "s.sqlite")
    sid = s.create().id
    for role, text in (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")):
        s.add_message(sid, role, text)
    assert s.truncate(sid, 2) == 2
    s.add_message(sid, "user", "e")
    assert [m["content"] for m in s.messages(sid)] == ["a", "b", "e"]
    with pytest.raises(StudioError):
        s.truncate("nothex!", 0)


@pytest.mark.parametrize(("text", "shown"), [
    ("> “See {https://cran.r-project.org/web/packages/}” [1]",
     "> “See {`https://cran.r-project.org/web/packages/`}” [1]"),
    ("at https://en.wikipedia.org/wiki/R_(language).", "at `https://en.wikipedia.org/wiki/R_(language)`."),
    ("(see https://x.org/a), then", "(see `https://x.org/a`), then"),
    ("go to www.r-project.org, then", "go to `www.r-project.org`, then"),
    ("“https://x.org/q?a=1&b=2”", "“`https://x.org/q?a=1&b=2`”"),
])
def test_urls_in_quotes_and_sentences_are_shown_whole(text, shown):
    from studio.markup import neutralize

    assert neutralize(text) == shown


# --- the page viewer's core ----------------------------------------------------------------------------------
def test_a_cited_page_renders_with_the_quote_shaded(tmp_path):
    from ingest.pages import render_page

    pdf = make_pdf(tmp_path / "p.pdf", ["First page.", "Second page. Angel Falls is 979 metres high.\nMore text."])
    image = render_page(pdf, 2, "Angel Falls is 979 metres high.")
    pixels = np.asarray(image)
    yellow = (pixels[..., 0] > 200) & (pixels[..., 1] > 180) & (pixels[..., 2] < 150)
    assert image.info["quote_found"] and yellow.sum() > 500
    rows = np.nonzero(yellow.any(axis=1))[0]
    assert rows.max() < pixels.shape[0] * 0.2  # shaded where the sentence stands: near the top of the page
    plain = render_page(pdf, 2, "a sentence that is not on the page")
    assert not plain.info["quote_found"]
    with pytest.raises(StudioError, match="page 3 is not in this document"):
        render_page(pdf, 3)


def test_the_server_renders_pages_in_a_child_process_that_may_fail_alone(tmp_path):
    from ingest.pages import render_page_isolated

    pdf = make_pdf(tmp_path / "p.pdf", ["Only page. The Nile is long."])
    image = render_page_isolated(pdf, 1, "The Nile is long.")
    assert image.info["quote_found"] and image.size[0] > 500
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 nothing else")
    with pytest.raises(StudioError, match="could not be rendered"):
        render_page_isolated(broken, 1)
    with pytest.raises(StudioError, match="page 2 is not in this document"):
        render_page_isolated(pdf, 2)


@pytest.mark.parametrize("key", ["../../etc/passwd", "0123456789abcdeZ", "", None, "/abs/0123456789abcdef"])
def test_an_original_is_found_only_by_its_content_key(key):
    from ingest.pages import original_path

    with pytest.raises(StudioError):
        original_path(key)


# --- Eval's words ------------------------------------------------------------------------------------------------
def test_the_eval_summary_says_what_passed_apart_from_each_cases_check():
    from studio.ui.eval_tab import case_check, summary_md, table

    cases = [{"id": "a", "question": "q", "answer": "x", "metrics": {"g": 0.9}, "failed": [], "unsupported": []},
             {"id": "b", "question": "q", "answer": "y", "metrics": {"g": 0.4}, "failed": ["g"], "unsupported": ["y"]}]
    report = {"suite": "s", "cases": cases, "seconds": 1, "metrics": {"g": 0.65}, "thresholds": {"g": 0.5},
              "threshold_failures": {}, "passed": True, "run_dir": ""}
    text = summary_md(report)
    assert text.startswith("### Suite passed: every metric's mean meets its threshold")
    assert "**1 of 2** cases fall below one" in text and "| g | 0.650 | 0.5 | met |" in text
    assert not any(ch in text for ch in "✅❌✗")
    assert case_check(cases[1], {"g": 0.5}) == "below: g 0.40 < 0.5"
    assert table(report)["this case"].tolist() == ["meets every threshold", "below: g 0.40 < 0.5"]
    failed = summary_md({**report, "metrics": {"g": 0.45}, "threshold_failures": {"g": {}}, "passed": False})
    assert failed.startswith("### Suite failed: g below its threshold") and "| g | 0.450 | 0.5 | below |" in failed


# --- Sampling ------------------------------------------------------------------------------------------------------
def test_the_mixture_takes_its_components_from_five_sliders():
    from studio.ui.sampling_tab import config_of, pick_distribution

    ups = pick_distribution({"distribution": "mixture"})
    assert [ups[f"p{i}"]["label"] for i in range(1, 6)] == ["weight of the first", "mean 1", "std 1", "mean 2",
                                                            "std 2"]
    cfg = config_of({"distribution": "mixture", "p1": 0.2, "p2": -3, "p3": 0.5, "p4": 1, "p5": 2,
                     "formula": "", "n": 1000, "seed": 0, "f": "x"})
    assert cfg.params == {"weights": [0.2, 0.8], "means": [-3.0, 1.0], "stds": [0.5, 2.0]}
    assert not pick_distribution({"distribution": "normal"})["p3"]["visible"]


def test_the_importance_sampling_plot_draws_the_target_where_it_lives():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generative.sampling import make_distribution
    from generative.sampling_plots import _density_line

    fig, ax = plt.subplots()
    draws = np.random.default_rng(0).normal(4, 1, 5000)  # a proposal far to the right of N(0, 1)
    _density_line(ax, make_distribution("normal", mean=0, std=1), draws)
    xs = ax.lines[0].get_xdata()
    plt.close(fig)
    assert xs.min() < -2.5 and xs.max() > 6.5


def test_mcmc_beyond_the_cap_says_so():
    from studio.ui.sampling_tab import run

    v = {"distribution": "normal", "p1": 0, "p2": 1, "p3": 0, "p4": 0, "p5": 0, "formula": "", "n": 100_000,
         "seed": 0, "f": "x", "step": 1.0, "chains": 2, "burn_in": 100}
    out = run(v, kind="mcmc")
    assert "n = 100,000 was asked; the tab runs 20,000 steps per chain" in out["result_mcmc"]
    assert "asked" not in run({**v, "n": 5000}, kind="mcmc")["result_mcmc"]
