"""The Eval tab in a real browser: run a suite, see the table, the highlighted answers and the chart,
run it again compared with the first run; score one answer by hand."""

import re

import pytest

pytestmark = pytest.mark.browser


def run_and_wait(page, previous: str) -> str:
    """Click Run and wait for the summary of a new run (each run has its own folder)."""
    page.click("#eval-run")
    try:
        page.wait_for_function(
            "prev => { const m = document.querySelector('#eval-summary').innerText.match(/Run folder: (\\S+)/);"
            " return m && m[1] !== prev; }", arg=previous, timeout=90_000)
    except Exception:
        page.screenshot(path="/tmp/ui_eval_fail.png", full_page=True)
        raise
    return re.search(r"Run folder: (\S+)", page.inner_text("#eval-summary")).group(1)


def test_run_a_suite_see_cases_and_compare(browser, studio_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Eval").click()
    page.wait_for_selector("#eval-run")
    page.click("#eval-suite input")
    page.locator("li", has_text="answers_demo").first.click()
    first = run_and_wait(page, "")
    assert first.split("/")[-1].startswith("answers_demo-")
    summary = page.inner_text("#eval-summary")
    # what passed is said apart from each case's own check, in words, without emoji boxes
    assert "Suite passed: every metric's mean meets its threshold" in summary
    assert "groundedness" in summary and "4 cases" in summary and "✅" not in summary and "❌" not in summary
    marked = re.search(r"(\d+) of 4 cases fall below one", summary)
    assert marked, summary
    table = page.inner_text("#eval-table")
    assert "this case" in table and table.count("below: ") == int(marked.group(1))
    for case in ("seq-faithful", "seq-number-changed", "solve-faithful", "solve-added-claim"):
        assert case in table
    bad = page.locator("#eval-case-seq-number-changed .unsupported")
    assert "Hadley Wickham" in bad.first.inner_text()  # the invented sentence is highlighted
    assert page.locator("#eval-case-seq-faithful .unsupported").count() == 0
    page.locator("#eval-plot img, #eval-plot canvas, #eval-plot svg").first.wait_for(timeout=30_000)

    # the same suite again, compared with the first run: nothing regressed
    page.click("#eval-refresh")
    page.click("#eval-baseline input")
    page.locator("li", has_text=first.split("/")[-1]).first.click()
    second = run_and_wait(page, first)
    assert second != first
    page.wait_for_function("document.querySelector('#eval-compare').innerText.includes('0 regression')",
                           timeout=30_000)

    # one answer scored by hand
    page.get_by_text("Check one answer's groundedness").click()
    page.fill("#eval-g-context textarea", "Angel Falls in Venezuela is 979 metres high.")
    page.fill("#eval-g-answer textarea", "Angel Falls is 979 metres high. It was first climbed by Neil Armstrong.")
    page.click("#eval-g-run")
    page.wait_for_selector("#eval-g-out .unsupported", timeout=30_000)
    assert "Neil Armstrong" in page.inner_text("#eval-g-out .unsupported")
    assert "1 of 2 sentences not supported" in page.inner_text("#eval-g-out")
    page.close()
