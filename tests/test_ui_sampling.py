"""The Sampling tab in a real browser: move a slider, draw, see the histogram update."""

import pytest

pytestmark = pytest.mark.browser


def draw_and_wait(page, previous_text: str) -> str:
    """Click Draw and wait for a result from a new run (each run has its own folder)."""
    folder = previous_text.split("run folder: ")[-1].strip() if previous_text else ""
    page.click("#samp-run-draw")
    page.wait_for_function(
        "prev => { const m = document.querySelector('#samp-result-draw').innerText.match(/run folder: (\\S+)/);"
        " return m && m[1] !== prev; }", arg=folder, timeout=60_000)
    text = page.inner_text("#samp-result-draw")
    return text[text.index("estimate"):]


def plot_src(page) -> str:
    img = page.locator("#samp-plot-draw img")
    img.wait_for(timeout=30_000)
    return img.get_attribute("src")


def test_slider_changes_the_drawn_histogram(browser, studio_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Sampling").click()
    page.wait_for_selector("#samp-run-draw")
    page.fill("#samp-p2 input[type=number]", "2.5")
    page.keyboard.press("Enter")
    first = draw_and_wait(page, "")
    assert "(true 0 / 2.5)" in first and "inside the support: yes" in first
    first_plot = plot_src(page)
    page.fill("#samp-p2 input[type=number]", "0.5")
    page.keyboard.press("Enter")
    second = draw_and_wait(page, first)
    assert "(true 0 / 0.5)" in second
    sample_std = float(second.split("std ")[1].split(" ")[0])
    assert sample_std == pytest.approx(0.5, rel=0.05)  # the new draws follow the moved slider
    page.wait_for_function("src => document.querySelector('#samp-plot-draw img').src !== src", arg=first_plot,
                           timeout=30_000)
    page.close()
