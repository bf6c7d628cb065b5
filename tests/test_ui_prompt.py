"""The Prompt Lab in a real browser: self-consistency with 5 samples shows its vote chart."""

import pytest

pytestmark = pytest.mark.browser


def test_self_consistency_vote_chart(browser, studio_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Prompt Lab").click()
    page.wait_for_selector("#pl-run")
    # only self-consistency, 5 samples
    for box in ("zero-shot", "cot"):
        page.locator("#pl-techniques label", has_text=box).first.click()
    page.fill("#pl-samples input[type=number]", "5")
    page.keyboard.press("Enter")
    page.click("#pl-run")
    page.wait_for_function("document.querySelector('#pl-vote-stats').innerText.includes('agreement')",
                           timeout=180_000)
    stats = page.inner_text("#pl-vote-stats")
    assert "over 5 samples" in stats
    assert "self-consistency" in page.inner_text("#pl-table")
    # the chart rendered: a bar per answer
    page.wait_for_selector("#pl-votes .vote-row .vote-bar", timeout=30_000)
    assert "Final answer" in page.inner_text("#pl-details")  # the exact prompt is shown
    page.close()
