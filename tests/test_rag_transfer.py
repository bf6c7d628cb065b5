"""Grounded answers on other kinds of documents: heading-aware HTML, section citations, refusals that
transfer to corpora the threshold was not tuned on, the small-model answer rule, follow-ups, OCR."""

from __future__ import annotations

import pytest

from eval.devsets import CORPORA, right_place
from ingest.loaders import LoadError, load_file
from ingest.ocr import ocr_available
from ingest.pipeline import Ingestor
from ingest.structure import html_sections, markdown_sections
from studio.rag.chain import RagChain, RagConfig, swap_frame
from studio.rag.retriever import Retriever
from studio.text import tokenize

PAGE = """<!doctype html><html><head><title>widgets — Widget tools</title><style>p{}</style></head><body>
<div class="related" role="navigation"><a href="index.html">Index</a> Previous topic NAVTEXT</div>
<nav>NAVTWO</nav>
<div class="body" role="main"><section id="module-widgets"><h1>widgets — Widget tools<a class="headerlink"
href="#module-widgets">¶</a></h1><p>This module makes widgets.</p>
<section id="making"><h2>Making widgets<a class="headerlink" href="#making">¶</a></h2>
<p>Call <code>make_widget(size)</code> to
make one.</p><div class="admonition note"><h3>Note</h3><p>Sizes are in millimetres.</p></div>
<table><tr><th>size</th><th>use</th></tr><tr><td>3</td><td>small</td></tr></table>
<section id="big"><h3>Big widgets</h3><pre>w = make_widget(900)
w.grow()</pre></section></section></section>
<div class="toc">TOCTEXT</div></div><div class="footer">FOOTTEXT</div></body></html>"""


def test_html_is_cut_at_headings_with_paths_and_anchors_and_without_navigation():
    title, sections = html_sections(PAGE)
    assert title == "widgets — Widget tools"
    paths = [" > ".join(s.path) for s in sections]
    assert paths == ["widgets — Widget tools", "widgets — Widget tools > Making widgets",
                     "widgets — Widget tools > Making widgets > Big widgets"]
    assert [s.anchor for s in sections] == ["module-widgets", "making", "big"]
    text = "\n".join(s.text for s in sections)
    for hidden in ("NAVTEXT", "NAVTWO", "TOCTEXT", "FOOTTEXT", "p{}", "¶"):
        assert hidden not in text
    making = sections[1].text
    assert "Call make_widget(size) to make one." in making  # a line break in the source is a space
    assert "Note:" in making and "millimetres" in making  # a box's heading is not a section
    assert "size | use |" in making and "3 | small |" in making  # a table row stays one line
    assert "w = make_widget(900)\nw.grow()" in sections[2].text  # <pre> keeps its lines


def test_a_real_manual_page_keeps_its_sections():
    title, sections = html_sections(open(CORPORA["pgdoc"].base + "/sql-createtable.html").read())
    by_heading = {s.path[-1]: s for s in sections}
    assert {"Description", "Parameters", "Notes", "Examples", "Compatibility"} <= set(by_heading)
    assert by_heading["Description"].anchor == "SQL-CREATETABLE-DESCRIPTION"
    assert "CREATE TABLE will create a new, initially empty table" in by_heading["Description"].text
    assert "Prev" not in by_heading["Compatibility"].text.split("\n")[-1]  # the navfooter is gone


def test_markdown_sections_respect_code_fences_and_use_github_anchors():
    md = ("# Guide\nIntro.\n## Install it!\nRun this:\n```sh\n# not a heading\npip install x\n```\n"
          "## Install it!\nAgain.")
    sections = markdown_sections(md)
    assert [s.path for s in sections] == [["Guide"], ["Guide", "Install it!"], ["Guide", "Install it!"]]
    assert [s.anchor for s in sections] == ["guide", "install-it", "install-it-1"]
    assert "# not a heading\npip install x" in sections[1].text


def test_symbols_and_identifiers_survive_tokenization():
    toks = tokenize("What does ... mean? Use %in%, x |> f, data->>'a', PRAGMA user_version and json_each()")
    for want in ("...", "%in%", "|>", "->>", "user_version", "json_each", "pragma"):
        assert want in toks


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The PostgreSQL and Python HTML corpora, ingested once (about 80 s)."""
    ing = Ingestor()
    for name in ("pgdoc", "pylib"):
        report = ing.ingest(CORPORA[name].files(), f"t-{name}")
        assert report.count("failed") == 0
    return ing


def test_html_chunks_and_citations_name_their_section(corpora):
    chain = RagChain(Retriever(corpora, "t-pgdoc"), None, RagConfig(style="extractive"))
    res = chain.ask("How many digits can a numeric column hold after the decimal point?")
    assert res.answerable and res.citations
    c = res.citations[0]
    assert c.source.endswith(".html") and c.page is None
    assert c.section and c.anchor  # the heading path and the id to link to
    assert c.place == f"{c.source} § {c.section.rsplit(' > ', 1)[-1]} (#{c.anchor})"
    chunks = corpora.store.get_chunks("t-pgdoc", {"source": "datatype-numeric.html"})
    headers = {m["headers"] for m in chunks["metadatas"]}
    assert "8.1. Numeric Types > 8.1.2. Arbitrary Precision Numbers" in headers
    # no chunk crosses a heading: each chunk's text is inside its own section's text
    _, sections = html_sections(open(CORPORA["pgdoc"].base + "/datatype-numeric.html").read())
    by_path = {" > ".join(s.path): " ".join(s.text.split()) for s in sections}
    for text, meta in zip(chunks["documents"], chunks["metadatas"], strict=True):
        assert " ".join(text.split())[:200] in by_path[meta["headers"]]


@pytest.mark.parametrize("name", ["pgdoc", "pylib"])
def test_refusals_transfer_to_the_reporting_halves(corpora, name):
    """One threshold, fitted on the tuning halves, on questions it never saw, refuses clearly more
    near-miss questions than the old rule (best cosine >= 0.30, tuned on the R manuals)."""
    corpus = CORPORA[name]
    chain = RagChain(Retriever(corpora, f"t-{name}"), None, RagConfig(style="extractive"))
    un = [chain.ask(q["q"]) for q in corpus.unanswerable("report")]
    ans = [chain.ask(q["q"]) for q in corpus.questions("report")]
    refused = sum(not r.answerable for r in un) / len(un)
    wrong = sum(not r.answerable for r in ans) / len(ans)
    old_rule = sum(r.hits[0].score < 0.30 for r in un if r.hits) / len(un)
    assert wrong <= 0.10, f"{name}: {wrong:.2f} of answerable questions refused"
    assert refused >= max(0.6, old_rule + 0.2), f"{name}: refused {refused:.2f} (old rule {old_rule:.2f})"
    found = sum(any(right_place(h.source, h.page, h.headers, q) for h in r.hits)
                for r, q in zip(ans, corpus.questions("report"), strict=True)) / len(ans)
    assert found >= 0.9, f"{name}: recall@k {found:.2f}"


def test_model_sentences_are_shown_only_when_the_passage_supports_them(corpora):
    chain = RagChain(Retriever(corpora, "t-pylib"), None, RagConfig(style="extractive"))
    passage = ("If the file is a CSV file exported from a spreadsheet, use read.delim or read.csv to import it "
               "into R. The read.table function reads a file in table format and creates a data frame.")
    shown, withheld = chain.supported_sentences(
        "Use read.delim or read.csv to import a CSV file into R [1]. Use a faster database server.", [passage])
    assert "read.csv" in shown and "database" not in shown
    assert withheld == ["Use a faster database server."]
    assert "[1]" not in shown  # the quotes carry the citations


def test_a_hybrid_answer_never_shows_an_unsupported_model_sentence(corpora, llamacpp):
    chain = RagChain(Retriever(corpora, "t-pylib"), llamacpp, RagConfig())
    res = chain.ask("How do I pack an integer as big-endian bytes?")
    assert res.answerable and "From the documents:" in res.answer
    model_part = res.answer.split("From the documents:")[0].strip()
    passages = [c.text for c in res.citations]
    if model_part:
        shown, withheld = chain.supported_sentences(model_part, passages)
        assert not withheld
    else:
        assert res.withheld  # the model said something the passages do not support: it was left out
    if res.withheld:  # and the sources panel says what was left out, and why
        from studio.ui.chat_rag import sources_html

        assert "which the quoted passages do not support" in sources_html(res)
    for sentence in filter(None, res.withheld.split(". ")):
        assert sentence.strip(". ") not in res.answer


def test_a_follow_up_whose_answer_lies_elsewhere_finds_it():
    assert swap_frame("How do I read a CSV file into R?", "And how do I write one?") == \
        "How do I write a CSV file into R"
    assert swap_frame("How do I read a CSV file into R?", "What about Excel?") is None
    ing = Ingestor()
    ing.ingest([CORPORA["rman"].base + "/R-data.pdf"], "t-rdata")
    chain = RagChain(Retriever(ing, "t-rdata"), None, RagConfig(style="extractive"))
    first = chain.ask("How do I read a CSV file into R?")
    history = [{"role": "user", "content": "How do I read a CSV file into R?"},
               {"role": "assistant", "content": first.answer}]
    follow = chain.ask("And how do I write one?", history=history)
    assert follow.standalone_question == "How do I write a CSV file into R"
    assert any("write.table" in h.text or "write.csv" in h.text for h in follow.hits[:3])
    assert follow.citations and follow.citations[0].page != first.citations[0].page


@pytest.fixture(scope="module")
def scanned_pdf(tmp_path_factory):
    """A real scanned page: page 12 of the R FAQ rendered to an image and wrapped back into a PDF."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(CORPORA["rman"].base + "/R-FAQ.pdf")
    image = pdf[11].render(scale=200 / 72, grayscale=True).to_pil()
    pdf.close()
    path = tmp_path_factory.mktemp("scan") / "scanned-faq.pdf"
    image.save(path, resolution=200)
    return path


def test_a_scanned_page_is_read_with_ocr_and_its_row_says_so(scanned_pdf):
    assert ocr_available() is None, ocr_available()
    from pypdf import PdfReader

    assert not (PdfReader(scanned_pdf).pages[0].extract_text() or "").strip()  # no text layer at all
    ing = Ingestor()
    report = ing.ingest([scanned_pdf], "t-scan")
    row = report.files[0]
    assert row.status == "added" and row.ocr == "1"
    assert [r.ocr for r in ing.documents("t-scan")] == ["1"]
    hits = Retriever(ing, "t-scan").retrieve("Modern Applied Statistics with S Venables Ripley")
    assert hits and "Venables" in hits[0].text and "Springer" in hits[0].text


def test_without_tesseract_a_scan_fails_alone_with_what_to_install(scanned_pdf, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LoadError, match="a scanned PDF needs OCR first: .*apt-get install tesseract-ocr"):
        load_file(scanned_pdf)


def test_relevance_pairs_teach_answering_not_topic():
    # the relevance encoder's training pairs (benchmarks/rag_relevance.py measures it): a near miss
    # keeps the topic and loses the answer; an FAQ passage answers its heading without repeating it
    import random

    from eval.relevance import RelevanceConfig, faq_examples, halueval_examples

    pairs = halueval_examples(RelevanceConfig(qa_rows=40), random.Random(0))
    positive = {q: p for p, q, label in pairs if label}
    assert len(positive) == 40
    near = [(q, p) for p, q, label in pairs if not label and p in positive[q].replace("  ", " ")
            or not label and set(p.split(". ")) < set(positive[q].split(". "))]
    assert len(near) >= 10  # same knowledge, the answer's sentences gone
    for q, p in near:
        assert len(p) < len(positive[q])
    faq = faq_examples(RelevanceConfig(), random.Random(0))
    assert len(faq) > 200 and sum(label for *_, label in faq) * 2 == len(faq)
    for passage, question, _ in faq:
        assert question.endswith("?") and question not in passage
