"""Everyday use in a real browser: lists that keep themselves current, the vote chart, reopened grounded
chats with the page viewer, Regenerate / Continue / Edit, queued jobs, the chunk preview, the Eval
report's words, links, tables, toasts and the Sampling lab's details. Each test is what a user would
notice if it broke."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_studio
from tests.pdfgen import make_pdf

pytestmark = pytest.mark.browser

PAGES = ["Rivers of Europe. The Danube flows through ten countries and into the Black Sea.",
         "Mountains. Mont Blanc is the highest mountain in the Alps, at 4806 metres.",
         "Deserts. The Atacama is one of the driest deserts on Earth."]


def open_tab(browser, url, tab, selector, height=1500):
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name=tab).click()
    page.wait_for_selector(selector, state="attached", timeout=30_000)
    return page


def pick(page, field, text):
    """Open a dropdown and click the option containing ``text``."""
    page.click(f"{field} input")
    page.locator("ul[role=listbox] li", has_text=text).first.click()


def bot_messages(page):
    return page.locator('#chatbot [data-testid="bot"]')


def wait_bots(page, n, timeout=120_000):
    page.wait_for_function(
        "n => { const b = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " return b.length === n && !document.querySelector('#chat-stats').innerText.includes('working'); }",
        arg=n, timeout=timeout)
    page.wait_for_function("document.querySelector('#chat-stats').innerText.trim().length > 0", timeout=timeout)


@pytest.fixture(scope="module")
def alps(tmp_path_factory):
    import hashlib

    from ingest.pages import original_path

    pdf = make_pdf(tmp_path_factory.mktemp("alps") / "europe.pdf", PAGES)
    assert run_studio("ingest", str(pdf), "--collection", "ui-alps").returncode == 0
    kept = original_path(hashlib.sha256(pdf.read_bytes()).hexdigest()[:16])  # kept for the page viewer
    assert kept.read_bytes() == pdf.read_bytes() and kept.stat().st_mode & 0o777 == 0o600
    return "ui-alps"


# --- 1. lists refresh across tabs; 8. the reason column, the progress bar, the Stop button ------------
def test_a_collection_ingested_in_documents_is_offered_in_chat_without_a_reload(browser, studio_server, tmp_path):
    page = open_tab(browser, studio_server, "Chat", "#chat-input textarea")
    page.wait_for_function("document.querySelector('#chat-collection').innerText.includes('you can use')",
                           timeout=30_000)
    before = int(re.search(r"(\d+) collections? you can use", page.inner_text("#chat-collection")).group(1))
    # Stop is not painted as a destructive red button while nothing runs
    assert "stop" not in (page.get_attribute("#chat-stop", "class") or "").split()
    page.get_by_role("tab", name="Documents").click()
    good = tmp_path / "notes.txt"
    good.write_text("The Rhine rises in the Swiss Alps and flows to the North Sea.\n" * 3)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a PDF at all")
    page.locator("#docs-files input[type=file]").set_input_files([str(good), str(broken)])
    page.fill("#docs-collection input", "fresh-notes")
    page.keyboard.press("Enter")
    page.click("#docs-ingest")
    # the progress shows on the results, not over the collection field being typed in
    page.wait_for_function("document.querySelector('#docs-summary').innerText.includes('fresh-notes')",
                           timeout=90_000)
    assert page.locator("#docs-collection .eta-bar, #docs-collection .progress-text").count() == 0
    results = page.locator("#docs-results")
    assert "broken.pdf" in results.inner_text() and "failed" in results.inner_text()
    widths = page.evaluate("""() => [...document.querySelectorAll('#docs-results thead th')]
                               .map(th => th.getBoundingClientRect().width)""")
    assert widths[-1] >= 0.35 * sum(widths), widths  # the reason has room to be read
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_function(f"document.querySelector('#chat-collection').innerText"
                           f".includes('{before + 1} collection')", timeout=30_000)
    pick(page, "#chat-collection", "fresh-notes")
    assert page.input_value("#chat-collection input") == "fresh-notes"
    page.close()


def test_a_whole_folder_is_ingested_file_by_file(browser, studio_server, tmp_path):
    folder = tmp_path / "handbook"
    (folder / "part2").mkdir(parents=True)
    (folder / "intro.md").write_text("# Intro\n\nThe handbook explains how the ferry timetable works.\n")
    (folder / "part2" / "winter.txt").write_text("In winter the ferry leaves at nine in the morning.\n")
    page = open_tab(browser, studio_server, "Documents", "#docs-folder input[type=file]")
    page.locator("#docs-folder input[type=file]").set_input_files(str(folder))  # the folder picker's way in
    page.fill("#docs-collection input", "handbook-folder")
    page.keyboard.press("Enter")
    page.click("#docs-ingest")
    page.wait_for_function("document.querySelector('#docs-summary').innerText.includes('2 added')", timeout=90_000)
    results = page.inner_text("#docs-results")
    assert "intro.md" in results and "winter.txt" in results
    page.close()


# --- 2. the vote chart ----------------------------------------------------------------------------------
def test_the_vote_chart_has_a_bar_for_every_answer_in_numeric_order(browser, studio_server):
    page = open_tab(browser, studio_server, "Prompt Lab", "#pl-run")
    # the empty library table names its suites, not 1 2 3
    headers = page.inner_text("#pl-library-table")
    assert "technique" in headers and not re.search(r"^\s*1\s+2\s+3", headers)
    for box in ("zero-shot", "cot"):
        page.locator("#pl-techniques label", has_text=box).first.click()
    page.fill("#pl-question textarea", "Pick a random whole number between 1 and 200. Answer with the number only.")
    page.fill("#pl-expected textarea", "")
    page.fill("#pl-samples input[type=number]", "5")
    page.keyboard.press("Enter")
    page.fill("#pl-temperature input[type=number]", "1.5")
    page.keyboard.press("Enter")
    page.click("#pl-run")
    page.wait_for_selector("#pl-votes .vote-row", timeout=180_000)
    rows = page.locator("#pl-votes .vote-row")
    answers = [rows.nth(i).locator(".vote-answer").inner_text() for i in range(rows.count())]
    counts = [int(rows.nth(i).locator(".vote-count").inner_text().split()[0]) for i in range(rows.count())]
    widths = [rows.nth(i).locator(".vote-bar").bounding_box()["width"] for i in range(rows.count())]
    assert sum(counts) == 5 and all(w > 3 for w in widths), (answers, counts, widths)  # one vote has a bar
    assert len(answers) >= 2, answers  # the sampled answers differ at temperature 1.5
    numbers = [float(a) for a in answers if re.fullmatch(r"-?\d+(\.\d+)?", a)]
    assert numbers == sorted(numbers)  # 1, 2, 120: by value, not as text
    assert page.locator("#pl-vote-stats li").count() == 5  # every sample listed under the chart
    page.close()


# --- 3. a reopened grounded chat, the page viewer, Regenerate and Edit ---------------------------------------
def test_a_reopened_grounded_chat_keeps_citations_sources_and_pages(browser, studio_server, alps):
    page = open_tab(browser, studio_server, "Chat", "#chat-input textarea", height=1800)
    page.wait_for_function("document.querySelector('#chat-collection').innerText.includes('you can use')",
                           timeout=30_000)
    pick(page, "#chat-collection", alps)
    page.fill("#chat-input textarea", "How high is Mont Blanc?")
    page.click("#chat-send")
    page.wait_for_selector("#chat-sources details", timeout=120_000)
    wait_bots(page, 1)
    first_stats = page.inner_text("#chat-stats")
    assert alps in first_stats
    # the page viewer shows the cited page as an image, the quote shaded
    page.get_by_text("Page viewer: the cited PDF page").click()
    pick(page, "#chat-page-pick", "europe.pdf · page 2")
    try:
        page.wait_for_selector("#chat-page img", timeout=30_000)
    except Exception:
        page.screenshot(path="/tmp/ui_pages_fail.png", full_page=True)
        raise
    assert "europe.pdf, page 2: the quoted passage is shaded" in page.inner_text("#chat-page-note")
    assert page.locator("#chat-page img").bounding_box()["height"] > 300
    # a plain chat in between, then the grounded one reopened
    page.click("#chat-clear")
    page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length === 0")
    page.get_by_text("Sessions", exact=True).click()
    pick(page, "#chat-session", "How high is Mont Blanc?")
    page.wait_for_selector("#chatbot a[href='#chat-src-1']", timeout=30_000)
    assert "4806" in page.inner_text("#chat-sources details")
    assert page.locator("#chat-sources .answer-check").count() == 1
    assert page.inner_text("#chat-stats") == first_stats  # this chat's figures, not the last chat's
    pick(page, "#chat-page-pick", "europe.pdf · page 2")
    page.wait_for_function("document.querySelector('#chat-page-note').innerText.includes('page 2')")
    # Regenerate answers the same question again with the next seed, in place of the old answer
    page.get_by_text("Generation", exact=True).click()
    seed = int(page.input_value("#chat-seed input") or 0)
    page.click("#chat-regenerate")
    page.wait_for_function(f"document.querySelector('#chat-seed input').value === '{seed + 1}'", timeout=60_000)
    wait_bots(page, 1)
    assert page.locator('#chatbot [data-testid="user"]').count() == 1
    assert page.locator("#chatbot a[href='#chat-src-1']").count() >= 1
    # Edit puts the question back in the box and takes the turn away
    page.click("#chat-edit")
    page.wait_for_function("document.querySelector('#chat-input textarea').value === 'How high is Mont Blanc?'")
    page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=\"user\"]').length === 0")
    page.fill("#chat-input textarea", "Which desert is one of the driest?")
    page.click("#chat-send")
    wait_bots(page, 1)
    assert "Atacama" in page.inner_text("#chat-sources")
    page.close()


def test_continue_extends_the_last_plain_reply(browser, studio_server):
    page = open_tab(browser, studio_server, "Chat", "#chat-input textarea")
    page.get_by_text("Generation", exact=True).click()
    page.fill("#chat-max-tokens input[type=number]", "16")
    page.keyboard.press("Enter")
    page.fill("#chat-input textarea", "Write a long paragraph about the history of the bicycle.")
    page.click("#chat-send")
    wait_bots(page, 1)
    first = bot_messages(page).last.inner_text()
    page.click("#chat-continue")
    page.wait_for_function("document.querySelector('#chat-stats').innerText.startsWith('continued')",
                           timeout=60_000)
    assert bot_messages(page).count() == 1  # the same reply, longer; not a new message
    longer = bot_messages(page).last.inner_text()
    assert longer.startswith(first.strip()[:20]) and len(longer) > len(first)
    page.close()


def test_a_saved_answer_shows_urls_in_quotes_whole(browser, studio_server):
    from studio.rag.sessions import Sessions

    sessions = Sessions()
    sid = sessions.create().id
    sessions.add_message(sid, "user", "Where is CRAN?")
    sessions.add_message(sid, "assistant", "> “See {https://cran.r-project.org/web/packages/} and "
                                           "https://en.wikipedia.org/wiki/R_(language).”")
    page = open_tab(browser, studio_server, "Chat", "#chat-input textarea")
    page.get_by_text("Sessions", exact=True).click()
    pick(page, "#chat-session", "Where is CRAN?")
    page.wait_for_selector("#chatbot [data-testid='bot'] code", timeout=30_000)
    codes = page.locator("#chatbot [data-testid='bot'] code").all_inner_texts()
    assert codes == ["https://cran.r-project.org/web/packages/", "https://en.wikipedia.org/wiki/R_(language)"]
    assert page.locator("#chatbot [data-testid='bot'] a[href^='http']").count() == 0  # shown, not linked
    page.close()


# --- 4. queued jobs: the message, cancel's words, elapsed / ETA, the log; 1. job labels refresh -------------
def test_a_second_job_says_it_is_queued_and_the_first_shows_its_progress(browser, studio_server):
    from studio.jobs import Jobs

    before = {j.id for j in Jobs().list()}
    page = open_tab(browser, studio_server, "Generate", "#gen-start")
    try:
        _queue_a_second_job(page)
    except Exception:
        page.screenshot(path="/tmp/ui_jobs_fail.png", full_page=True)
        raise
    finally:  # a failed check must not leave a training job running on the test machine
        for job in Jobs().list():
            if job.id not in before and job.state in ("running", "queued"):
                Jobs().cancel(job.id)


def _queue_a_second_job(page):
    pick(page, "#gen-data", "gmm")
    page.fill("#gen-steps input", "50000")
    page.click("#gen-start")
    page.wait_for_function("document.querySelector('#gen-job input').value.includes('running')", timeout=30_000)
    first = page.input_value("#gen-job input").split(" · ")[0]
    page.wait_for_function("document.querySelector('#gen-progress').innerText.includes('left (ETA')",
                           timeout=60_000)
    assert re.search(r"Running for \d+:\d\d", page.inner_text("#gen-progress"))
    page.get_by_text("Log", exact=True).click()
    page.wait_for_function("document.querySelector('#gen-log').innerText.includes('step ')", timeout=30_000)
    # a second job waits, and says behind what
    page.click("#gen-start")
    page.wait_for_function(f"document.querySelector('#gen-job input').value.split(' · ')[0] !== '{first}'",
                           timeout=30_000)
    second = page.input_value("#gen-job input").split(" · ")[0]
    page.wait_for_function("document.querySelector('#gen-progress').innerText.includes('Queued behind')",
                           timeout=30_000)
    assert f"Queued behind job {first}" in page.inner_text("#gen-progress")
    assert "position 1 in the queue" in page.inner_text("#gen-progress")
    # cancelling the queued job says what it does: it leaves the queue
    page.click("#gen-cancel")
    page.wait_for_selector("text=left the queue; it had not started", timeout=30_000)
    page.wait_for_function("document.querySelector('#gen-progress').innerText.includes('never started')",
                           timeout=30_000)
    # the first job, cancelled elsewhere (here: as `studio jobs cancel` would), is relabelled in the picker
    # by the tab itself, without a click on Refresh
    from studio.jobs import Jobs

    Jobs().cancel(first)
    page.wait_for_function(f"""() => {{ const i = document.querySelector('#gen-job input');
        return i.value.startsWith('{second} · cancelled'); }}""", timeout=10_000)
    page.click("#gen-job input")
    page.wait_for_function(f"""() => [...document.querySelectorAll('ul[role=listbox] li')]
        .some(li => li.innerText.startsWith('{first} · cancelled'))""", timeout=60_000)
    page.keyboard.press("Escape")


# --- 5. the chunk preview is paged --------------------------------------------------------------------------
def test_the_chunk_preview_shows_a_page_of_chunks_with_the_count(browser, studio_server, tmp_path):
    page = open_tab(browser, studio_server, "Documents", "#docs-files input[type=file]")
    text = tmp_path / "long.txt"
    text.write_text("\n\n".join(f"Paragraph {i}. " + "Words about rivers and lakes. " * 30 for i in range(60)))
    page.locator("#docs-files input[type=file]").set_input_files(str(text))
    page.click("#docs-preview")
    page.wait_for_selector("#docs-preview-html .chunk", timeout=30_000)
    head = page.inner_text("#docs-preview-html .preview-count")
    total = int(re.search(r": (\d+) chunks", head).group(1))
    assert total > 40 and "chunks 1–20 shown, page 1 of" in head
    assert page.locator("#docs-preview-html .chunk").count() == 20
    assert page.evaluate("document.body.scrollHeight") < 9000
    page.fill("#docs-preview-page input", "2")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#docs-preview-html .preview-count').innerText"
                           ".includes('chunks 21–40')", timeout=30_000)
    assert page.locator("#docs-preview-html .chunk-meta").first.inner_text().startswith("chunk 20 ")
    page.close()


# --- 8. a toast from one tab does not stay over the next ------------------------------------------------------
def test_an_error_toast_closes_when_another_tab_is_opened(browser, studio_server):
    page = open_tab(browser, studio_server, "Fine-tune", "#ft-cancel")
    page.fill("#ft-job input", "")
    page.click("#ft-cancel")
    page.wait_for_selector("text=Pick a job first.", timeout=30_000)
    page.get_by_role("tab", name="Sampling").click()
    page.wait_for_selector("text=Pick a job first.", state="detached", timeout=3_000)  # not after its 10 s
    page.close()


# --- 9. sampling: MCMC says why n is capped; the mixture has its sliders ----------------------------------------
def test_sampling_says_why_mcmc_n_is_capped_and_the_mixture_has_controls(browser, studio_server):
    page = open_tab(browser, studio_server, "Sampling", "#samp-dist")
    pick(page, "#samp-dist", "mixture")
    for i, label in enumerate(("weight of the first", "mean 1", "std 1", "mean 2", "std 2"), 1):
        page.wait_for_function(f"document.querySelector('#samp-p{i}') && "
                               f"document.querySelector('#samp-p{i}').innerText.includes('{label}')", timeout=10_000)
        assert page.locator(f"#samp-p{i}").is_visible(), label
    page.get_by_role("tab", name="MCMC").click()
    page.fill("#samp-n input", "100000")
    page.click("#samp-run-mcmc")
    page.wait_for_function("document.querySelector('#samp-result-mcmc').innerText.includes('R-hat')",
                           timeout=120_000)
    result = page.inner_text("#samp-result-mcmc")
    assert "n = 100,000 was asked; the tab runs 20,000 steps per chain" in result
    page.close()
