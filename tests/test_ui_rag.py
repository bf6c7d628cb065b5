"""Grounded chat in a real browser: pick a collection, ask, see the cited page and the passage."""

import re

import pytest

from tests.conftest import run_studio
from tests.pdfgen import make_pdf

pytestmark = pytest.mark.browser

PAGES = ["Volcanoes of Iceland. Hekla erupted many times in recorded history.",
         "The highest waterfall in Venezuela is Angel Falls, with a height of 979 metres.",
         "Glaciers cover about eleven percent of Iceland."]


@pytest.fixture(scope="module")
def geo_collection(tmp_path_factory):
    pdf = make_pdf(tmp_path_factory.mktemp("geo") / "geo.pdf", PAGES)
    assert run_studio("ingest", str(pdf), "--collection", "ui-geo").returncode == 0
    return "ui-geo"


def pick_collection(page, name):
    """Wait until the page has listed the collections, open the list and click ``name``."""
    page.wait_for_function("document.querySelector('#chat-collection').innerText.includes('you can use')",
                           timeout=30_000)
    page.click("#chat-collection input")
    page.locator("li", has_text=name).first.click()


def ask(page, question):
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")


def test_grounded_answer_cites_the_right_page(browser, studio_server, geo_collection):
    page = browser.new_page(viewport={"width": 1280, "height": 1300})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.wait_for_selector("#chat-input textarea", timeout=30_000)
    pick_collection(page, geo_collection)
    assert page.input_value("#chat-collection input") == geo_collection
    ask(page, "How high is Angel Falls?")
    try:
        page.wait_for_selector("#chat-sources details", timeout=90_000)
    except Exception:
        page.screenshot(path="/tmp/ui_rag_fail.png", full_page=True)
        raise
    source = page.locator("#chat-sources details").first
    assert "geo.pdf · page 2" in source.inner_text()
    assert "979 metres" in source.locator("mark").inner_text()  # the quoted passage is marked
    bot = page.locator('#chatbot [data-testid="bot"]').last
    assert "979" in bot.inner_text()
    link = bot.locator("a[href='#chat-src-1']")
    assert link.count() >= 1  # the citation number is a link to its source
    check = page.locator("#chat-sources .answer-check")  # each answer sentence judged against the sources
    assert re.search(r"groundedness \d\.\d\d · ", check.inner_text())
    assert check.locator("li.supported, li.unsupported").count() >= 1
    # a question the documents cannot answer is refused plainly
    ask(page, "Who wrote the novel Moby-Dick?")
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " return b.length >= 2 && b[b.length - 1].innerText.includes('The documents do not say.'); }",
        timeout=60_000)
    page.wait_for_function("document.querySelector('#chat-sources').innerText"
                           ".includes('No passage in this collection answers')", timeout=30_000)
    # the conversation was saved as a session, titled after its first question
    page.get_by_text("Sessions", exact=True).click()
    assert page.input_value("#chat-session input") == "How high is Angel Falls? [ui-geo]"
    page.close()
