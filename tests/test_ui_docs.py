"""The Documents tab in a real browser: upload a PDF, preview, ingest, list, search, delete."""

import pytest

from tests.pdfgen import make_pdf

pytestmark = pytest.mark.browser

PAGES = ["Chapter one. The Danube flows through ten countries.",
         "Chapter two. Lake Baikal in Siberia is the deepest lake on Earth, about 1642 metres deep.",
         "Chapter three. The Atacama is one of the driest deserts."]


@pytest.fixture()
def docs_page(browser, studio_server):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_selector("#docs-files input[type=file]", state="attached", timeout=30_000)
    yield page
    page.close()


def test_upload_ingest_list_search_delete(docs_page, tmp_path):
    page = docs_page
    pdf = make_pdf(tmp_path / "lakes.pdf", PAGES)
    page.locator("#docs-files input[type=file]").set_input_files(str(pdf))
    page.fill("#docs-collection input", "browser-lakes")
    page.keyboard.press("Enter")
    # chunk preview: one card per chunk, with page numbers in the metadata line
    page.click("#docs-preview")
    page.wait_for_selector("#docs-preview-html .chunk", timeout=30_000)
    assert page.locator("#docs-preview-html .chunk").count() == 3
    assert "page 2" in page.locator("#docs-preview-html .chunk-meta").nth(1).inner_text()
    page.click("#docs-ingest")
    page.wait_for_function("document.querySelector('#docs-summary').innerText.includes('added')", timeout=90_000)
    assert "lakes.pdf" in page.inner_text("#docs-results") and "added" in page.inner_text("#docs-results")
    assert "lakes.pdf" in page.inner_text("#docs-list")
    page.fill("#docs-query textarea", "Which lake is the deepest?")
    page.click("#docs-search")
    page.wait_for_selector("#docs-hits .hit", timeout=30_000)
    top = page.locator("#docs-hits .hit").first.inner_text()
    assert "lakes.pdf · page 2" in top and "Baikal" in top
    # delete it again from the listing
    page.fill("#docs-delete-choice input", "lakes.pdf")
    page.keyboard.press("Enter")
    page.click("#docs-delete")
    page.wait_for_function("!document.querySelector('#docs-list').innerText.includes('lakes.pdf')", timeout=30_000)
