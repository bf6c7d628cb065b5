"""The Generate tab in a real browser: start a tiny VAE job, see its loss curve and a sample grid, cancel it."""

import pytest

pytestmark = pytest.mark.browser


def test_start_watch_and_cancel_a_vae_job(browser, studio_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Generate").click()
    page.wait_for_selector("#gen-start")
    assert "synthetic" in page.inner_text("#gen-notice")
    page.fill("#gen-steps input", "100000")
    page.fill("#gen-width input", "16")
    page.click("#gen-start")
    try:
        page.wait_for_function("document.querySelector('#gen-status').innerText.includes('running')",
                               timeout=60_000)
        # the curve and a refreshed sample grid appear while it trains
        page.locator("#gen-plot img, #gen-plot canvas, #gen-plot svg").first.wait_for(timeout=60_000)
        page.locator("#gen-grid img").first.wait_for(timeout=90_000)
    except Exception:
        page.screenshot(path="/tmp/ui_generate_fail.png", full_page=True)
        page.click("#gen-cancel")  # a failed check must not leave the job training on the test machine
        raise
    assert "vae on digits" in page.inner_text("#gen-status")
    page.click("#gen-cancel")
    page.wait_for_function("document.querySelector('#gen-status').innerText.includes('cancelled')",
                           timeout=60_000)
    page.close()
