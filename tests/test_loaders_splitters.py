"""Loaders and splitters on real files: known page contents, real R manuals, broken inputs."""

import io
import json
import zipfile

import docx
import pytest
from docx.oxml import parse_xml

from ingest.config import SplitterConfig
from ingest.loaders import Limits, LoadError, load_file
from ingest.splitters import split_documents, split_sentences
from studio.errors import StudioError
from tests.pdfgen import encrypt_pdf, make_bare_docx, make_pdf

R_INTRO = "/usr/share/R/doc/manual/R-intro.pdf"


def test_pdf_gives_one_document_per_page_with_1_based_pages(tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", ["Alpha page text.", "Beta page text.", "Gamma page text."])
    docs = load_file(pdf)
    assert [d.metadata["page"] for d in docs] == [1, 2, 3]
    assert [d.page_content.strip() for d in docs] == ["Alpha page text.", "Beta page text.", "Gamma page text."]
    assert all(d.metadata["source"] == "a.pdf" for d in docs)


def test_real_manual_pages_match_pypdf(tmp_path):
    from pypdf import PdfReader

    docs = load_file(R_INTRO)
    reader = PdfReader(R_INTRO)
    assert len(docs) == sum(1 for p in reader.pages if (p.extract_text() or "").strip())
    page = next(d for d in docs if d.metadata["page"] == 10)
    assert page.page_content == reader.pages[9].extract_text()


def test_type_is_decided_by_content_not_extension(tmp_path):
    disguised = make_pdf(tmp_path / "notes.txt", ["This is really a PDF."])
    docs = load_file(disguised)
    assert docs[0].metadata["kind"] == "pdf" and docs[0].metadata["page"] == 1


@pytest.mark.parametrize("name, data, expected", [
    ("utf8.txt", "Zoë’s café — naïve résumé".encode(), "Zoë’s café — naïve résumé"),
    ("bom.txt", b"\xef\xbb\xbfhello with BOM", "hello with BOM"),
    ("legacy.txt", "Ça coûte 5 € à Zürich, déjà vu".encode("cp1252"), "Ça coûte 5 € à Zürich, déjà vu"),
    ("utf16.txt", "wide text ünïcode".encode("utf-16"), "wide text ünïcode"),
    ("cyrillic.txt", "Привет, как дела? Это тестовый текст на русском языке.".encode("cp1251"),
     "Привет, как дела? Это тестовый текст на русском языке."),
    ("czech.txt", "Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština je krásná.".encode("cp1250"),
     "Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština je krásná."),
])
def test_text_encodings(tmp_path, name, data, expected):
    (tmp_path / name).write_bytes(data)
    assert load_file(tmp_path / name)[0].page_content == expected


def test_undecodable_bytes_never_crash(tmp_path):
    (tmp_path / "mixed.txt").write_bytes(b"good start \xff\xfe\xfd\x80\x81 good end " * 20)
    text = load_file(tmp_path / "mixed.txt")[0].page_content
    assert "good start" in text and "good end" in text


def test_html_keeps_only_visible_text(tmp_path):
    (tmp_path / "p.html").write_text(
        "<html><head><title>Install guide</title><style>body{color:red}</style>"
        "<script>var secret = 'do not index';</script></head><body><h1>Installing</h1>"
        "<p>Run <b>make</b> first.</p><noscript>enable js</noscript><ul><li>one</li><li>two</li></ul>"
        "</body></html>")
    doc = load_file(tmp_path / "p.html")[0]
    assert doc.page_content.split("\n") == ["Installing", "Run make first.", "one", "two"]
    assert doc.metadata["title"] == "Install guide"


def test_markdown_docx_csv_json(tmp_path):
    (tmp_path / "n.md").write_text("# Title\n\nBody text.\n")
    d = docx.Document()
    d.add_paragraph("First paragraph.")
    d.add_paragraph("")  # blank paragraphs are dropped
    d.add_paragraph("Second paragraph.")
    d.save(tmp_path / "d.docx")
    (tmp_path / "t.csv").write_text("name,role\nAda,engineer\nGrace,admiral\n")
    (tmp_path / "c.json").write_text(json.dumps({"server": {"port": 8080, "hosts": ["a", "b"]}}))
    assert load_file(tmp_path / "n.md")[0].metadata["kind"] == "markdown"
    assert load_file(tmp_path / "d.docx")[0].page_content == "First paragraph.\nSecond paragraph."
    assert load_file(tmp_path / "t.csv")[0].page_content == "name: Ada; role: engineer\nname: Grace; role: admiral"
    assert load_file(tmp_path / "c.json")[0].page_content.split("\n") == [
        "server.port: 8080", "server.hosts.0: a", "server.hosts.1: b"]


# --- .docx through python-docx ----------------------------------------------------------------

def _docx_lines(tmp_path, document) -> list[str]:
    document.save(tmp_path / "doc.docx")
    return load_file(tmp_path / "doc.docx")[0].page_content.split("\n")


def test_docx_reads_paragraphs_tables_and_headers_in_order(tmp_path):
    d = docx.Document()
    section = d.sections[0]
    section.header.paragraphs[0].text = "ACME confidential"
    section.footer.paragraphs[0].text = "Page footer"
    section.first_page_header.paragraphs[0].text = "Unused first-page header"  # titlePg is off
    d.add_heading("Installation", level=1)
    run = d.add_paragraph("Step").add_run()
    run.add_tab()
    run.add_text("run make")
    run.add_break()
    run.add_text("then make install")
    table = d.add_table(rows=2, cols=2)
    for (i, j), text in {(0, 0): "Key", (0, 1): "Value", (1, 0): "port", (1, 1): "8080"}.items():
        table.cell(i, j).text = text
    d.add_heading("Usage", level=2)
    d.add_paragraph("Start the server.")
    later = d.add_section()
    later.header.is_linked_to_previous = False
    later.header.paragraphs[0].text = "ACME confidential"  # same text, its own definition
    d.add_paragraph("Second section.")
    assert _docx_lines(tmp_path, d) == [
        "ACME confidential", "Installation", "Step\trun make", "then make install", "Key | Value", "port | 8080",
        "Usage", "Start the server.", "Second section.", "Page footer"]


def test_docx_merged_cells_and_nested_tables_are_read_once(tmp_path):
    d = docx.Document()
    table = d.add_table(rows=3, cols=3)
    for i, row in enumerate(table.rows):
        for j, cell in enumerate(row.cells):
            cell.text = f"r{i}c{j}"
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Wide"  # one w:tc spanning two grid columns
    table.cell(1, 2).merge(table.cell(2, 2)).text = "Tall"  # vMerge restart + continue
    # python-docx repeats merged cells in row.cells: the reason the loader reads the w:tc elements
    assert [c.text for c in table.rows[0].cells] == ["Wide", "Wide", "r0c2"]
    assert [c.text for c in table.rows[2].cells] == ["r2c0", "r2c1", "Tall"]
    inner = table.cell(2, 0).add_table(rows=2, cols=2)
    for (i, j), text in {(0, 0): "a", (0, 1): "1", (1, 0): "b", (1, 1): "2"}.items():
        inner.cell(i, j).text = text
    d.add_paragraph("After the table.")
    assert _docx_lines(tmp_path, d) == ["Wide | r0c2", "r1c0 | r1c1 | Tall", "r2c0 | r2c1", "a | 1", "b | 2",
                                        "After the table."]


TEXT_BOX = """
<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"
    xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
    xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"
    xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"
    xmlns:v="urn:schemas-microsoft-com:vml">
  <mc:Choice Requires="wps"><w:drawing><wp:anchor><wp:extent cx="914400" cy="457200"/>
    <wp:docPr id="1" name="Text Box 1"/><a:graphic>
    <a:graphicData uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">
      <wps:wsp><wps:txbx><w:txbxContent>
        <w:p><w:r><w:t>Boxed warning</w:t></w:r></w:p><w:p><w:r><w:t>Second box line</w:t></w:r></w:p>
      </w:txbxContent></wps:txbx><wps:bodyPr/></wps:wsp>
    </a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>
  <mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent>
    <w:p><w:r><w:t>Boxed warning</w:t></w:r></w:p><w:p><w:r><w:t>Second box line</w:t></w:r></w:p>
  </w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback>
</mc:AlternateContent>"""


def test_docx_text_box_is_read_once_after_its_anchor(tmp_path):
    d = docx.Document()
    anchor = d.add_paragraph("Anchor text.")
    anchor.add_run()._r.append(parse_xml(TEXT_BOX))
    d.add_paragraph("Next paragraph.")
    assert anchor.text == "Anchor text."  # python-docx alone never sees the box
    lines = _docx_lines(tmp_path, d)
    assert lines == ["Anchor text.", "Boxed warning", "Second box line", "Next paragraph."]


def test_docx_content_controls_and_tracked_changes(tmp_path):
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    d = docx.Document()
    d.element.body.insert(0, parse_xml(
        f'<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>Cover title</w:t></w:r></w:p></w:sdtContent></w:sdt>'))
    p = d.add_paragraph("Kept ")
    p._p.append(parse_xml(f'<w:ins {w} w:id="1" w:author="a"><w:r><w:t>inserted</w:t></w:r></w:ins>'))
    p._p.append(parse_xml(f'<w:del {w} w:id="2" w:author="a"><w:r><w:delText>deleted</w:delText></w:r></w:del>'))
    assert [q.text for q in d.paragraphs] == ["Kept "]  # python-docx skips both the control and the insertion
    assert _docx_lines(tmp_path, d) == ["Cover title", "Kept inserted"]


def _rewrite_docx(tmp_path, name, member, edit):
    buf = io.BytesIO()
    docx.Document().save(buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(tmp_path / name, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, edit(data) if info.filename == member else data)
    return tmp_path / name


@pytest.mark.parametrize("make, reason", [
    (lambda t: make_bare_docx(t / "bare.docx", ["no package relationships"]),
     'corrupt .docx ("no relationship of type'),
    (lambda t: _rewrite_docx(t, "cut.docx", "word/document.xml", lambda b: b[:len(b) // 2]), "corrupt .docx"),
    (lambda t: _rewrite_docx(t, "macro.docx", "[Content_Types].xml", lambda b: b.replace(
        b"openxmlformats-officedocument.wordprocessingml.document.main+xml",
        b"ms-word.document.macroEnabled.main+xml")),
     "not a plain Word document (application/vnd.ms-word.document.macroEnabled.main+xml)"),
], ids=["no-rels", "truncated-xml", "macro-enabled"])
def test_broken_docx_fails_with_a_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(LoadError) as err:
        load_file(path)
    assert str(err.value).startswith(f"{path.name}: {reason}")


def test_docx_zip_bomb_is_refused_before_anything_is_inflated(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b" " * 5_000_000)  # ~5 kB stored, 1000 times that inflated

    def no_inflating(*args, **kwargs):
        raise AssertionError("a zip member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)  # ZipFile.read goes through open too
    with pytest.raises(LoadError, match="word/document.xml would inflate .* times .*this looks like a zip bomb"):
        load_file(bomb)


def _corrupt(tmp_path):
    p = tmp_path / "bad.pdf"
    p.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    return p


def _empty(tmp_path):
    return make_pdf(tmp_path / "scan.pdf", ["", ""])


def _zip(tmp_path):
    p = tmp_path / "docs.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.txt", "hello")
    return p


def _binary(tmp_path):
    p = tmp_path / "blob.txt"
    p.write_bytes(bytes(range(256)) * 10)
    return p


@pytest.mark.parametrize("make, reason", [
    (lambda t: encrypt_pdf(make_pdf(t / "x.pdf", ["secret"]), t / "locked.pdf"), "encrypted PDF"),
    (_corrupt, "corrupt or unreadable PDF"),
    (_empty, "no text to ingest (no text layer, and OCR found no text on its pages either"),
    (_zip, "archives are not ingested"),
    (_binary, "binary file"),
], ids=["encrypted", "corrupt", "empty", "archive", "binary"])
def test_bad_files_fail_with_a_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(LoadError) as err:
        load_file(path)
    assert reason in str(err.value) and str(err.value).startswith(path.name)


def test_size_and_page_limits(tmp_path):
    pdf = make_pdf(tmp_path / "long.pdf", [f"page {i}" for i in range(5)])
    with pytest.raises(LoadError, match="5 pages is over the 3 page limit"):
        load_file(pdf, limits=Limits(max_pages=3))
    with pytest.raises(LoadError, match="over the 0.0001 MB limit"):
        load_file(pdf, limits=Limits(max_file_mb=0.0001))


# --- splitters --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manual_pages():
    return load_file(R_INTRO)[5:25]


def test_recursive_chunks_respect_size_overlap_and_offsets(manual_pages):
    chunks = split_documents(manual_pages, SplitterConfig("recursive", 500, 100))
    assert all(len(c.page_content) <= 500 for c in chunks)
    assert [c.metadata["chunk"] for c in chunks] == list(range(len(chunks)))
    by_page = {d.metadata["page"]: d.page_content for d in manual_pages}
    for c in chunks:
        start = c.metadata["start"]
        assert by_page[c.metadata["page"]][start:start + len(c.page_content)] == c.page_content
    same_page = [(a, b) for a, b in zip(chunks, chunks[1:], strict=False) if a.metadata["page"] == b.metadata["page"]]
    overlapping = sum(a.metadata["start"] + len(a.page_content) > b.metadata["start"] for a, b in same_page)
    assert overlapping >= len(same_page) // 2  # consecutive chunks share text


def test_every_chunk_carries_its_provenance(manual_pages):
    chunks = split_documents(manual_pages)
    for c in chunks:
        assert {"source", "page", "chunk", "headers", "start", "chunk_hash"} <= set(c.metadata)
        assert c.metadata["source"] == "R-intro.pdf" and len(c.metadata["chunk_hash"]) == 16


def test_sentence_splitter_keeps_whole_sentences():
    text = ("The mean is a location statistic. The variance measures spread! Does the median resist outliers? "
            "Yes it does. ") * 8
    from langchain_core.documents import Document

    chunks = split_documents([Document(page_content=text, metadata={"source": "s.txt"})],
                             SplitterConfig("sentence", 120, 40))
    assert len(chunks) > 3
    for c in chunks:
        assert len(c.page_content) <= 120
        assert c.page_content[-1] in ".!?" and c.page_content[0].isupper()
    assert split_sentences("Dr. Who? Yes. Next line\n\nNew paragraph") == ["Dr.", "Who?", "Yes.", "Next line",
                                                                          "New paragraph"]


def test_markdown_splitter_records_the_heading_path(tmp_path):
    (tmp_path / "guide.md").write_text("# Install\n\nIntro text.\n\n## Linux\n\nUse apt-get install r-base.\n\n"
                                       "## Windows\n\nRun the installer.\n\n# Usage\n\nStart R.\n")
    chunks = split_documents(load_file(tmp_path / "guide.md"), SplitterConfig("markdown", 200, 0))
    paths = {c.metadata["headers"]: c.page_content for c in chunks}
    assert "apt-get" in paths["Install > Linux"]
    assert "installer" in paths["Install > Windows"]
    assert "Start R." in paths["Usage"]


def test_token_splitter_fits_the_embedding_model(manual_pages):
    from ingest.splitters import _minilm_tokenizer

    chunks = split_documents(manual_pages, SplitterConfig("token", 128, 16))
    tok = _minilm_tokenizer()
    lengths = [len(tok.encode(c.page_content, add_special_tokens=False)) for c in chunks]
    assert max(lengths) <= 128 and sum(lengths) / len(lengths) > 64


@pytest.mark.parametrize("cfg, message", [
    (SplitterConfig("fancy"), "unknown splitter"),
    (SplitterConfig("recursive", 100, 100), "must be smaller than chunk size"),
    (SplitterConfig("token", 512, 0), "at most 256 tokens"),
])
def test_bad_splitter_settings(cfg, message):
    with pytest.raises(StudioError, match=message):
        cfg.resolved()
