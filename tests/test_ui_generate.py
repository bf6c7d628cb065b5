"""The Generate tab in a real browser: start a tiny VAE job, see its loss curve and a sample grid, cancel it."""

import pytest

pytestmark = pytest.mark.browser


def generate_tab(browser, url: str, height: int = 1400):
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Generate").click()
    page.wait_for_selector("#gen-start")
    return page


def start_and_wait(page, state: str, timeout: int, also=()) -> None:
    """Click Start and wait until the status says ``state`` (and each ``also`` locator shows); on a
    failure, a screenshot, and the job is cancelled so it does not keep training on the test machine."""
    page.click("#gen-start")
    try:
        page.wait_for_function(f"document.querySelector('#gen-status').innerText.includes('{state}')",
                               timeout=timeout)
        for selector, ms in also:
            page.locator(selector).first.wait_for(timeout=ms)
    except Exception:
        page.screenshot(path="/tmp/ui_generate_fail.png", full_page=True)
        page.click("#gen-cancel")
        raise


def test_start_watch_and_cancel_a_vae_job(browser, studio_server):
    page = generate_tab(browser, studio_server)
    assert "synthetic" in page.inner_text("#gen-notice")
    page.fill("#gen-steps input", "100000")
    page.fill("#gen-width input", "16")
    # the curve and a refreshed sample grid appear while it trains
    start_and_wait(page, "running", 60_000, also=[("#gen-plot img, #gen-plot canvas, #gen-plot svg", 60_000),
                                                  ("#gen-grid img", 90_000)])
    assert "vae on digits" in page.inner_text("#gen-status")
    page.click("#gen-cancel")
    page.wait_for_function("document.querySelector('#gen-status').innerText.includes('cancelled')",
                           timeout=60_000)
    page.close()


def test_a_conditional_ddpm_run_samples_a_picked_class_with_guidance(browser, studio_server):
    page = generate_tab(browser, studio_server, height=1800)
    page.locator("#gen-model").get_by_text("ddpm").click()
    page.locator("#gen-cond input").check()
    page.fill("#gen-steps input", "20")
    page.fill("#gen-width input", "8")
    start_and_wait(page, "finished", 240_000)
    assert "ddpm on digits" in page.inner_text("#gen-status")
    assert "right class" in page.inner_text("#gen-status")  # the conditional accuracy of the last samples
    page.get_by_text("Sample from the selected run").click()
    page.locator("#gen-label input").click()
    page.get_by_role("option", name="7 (digit 7 / Sneaker)").click()
    slider = page.locator("#gen-guidance input[type=number]")
    slider.fill("4.5")
    slider.press("Enter")
    page.click("#gen-draw")
    page.wait_for_function("document.body.innerText.includes('class 7 (7), guidance 4.5')", timeout=120_000)
    page.locator("#gen-out1 img").first.wait_for(timeout=30_000)
    page.close()
