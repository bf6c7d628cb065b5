"""The Documents tab's handlers called as the page calls them, with plain dicts: no browser, no server.

Real files in the upload folder, a real DocsService (it loads the embedding model). What only a browser
shows (uploading through the file widget, the cards on the page) stays in tests/test_ui_docs.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pytest

from ingest.config import IngestConfig
from studio.limits import current as current_limits
from studio.paths import uploads_dir
from studio.ui import docs_tab
from studio.ui.docs_tab import DocsService

pytestmark = pytest.mark.slow

TEXT = ("The lamp room of the lighthouse is cleaned every morning by the keeper. " * 4 + "\n\n"
        + "Lake Baikal in Siberia is the deepest lake on Earth, about 1642 metres deep. " * 4 + "\n\n"
        + "The Atacama is one of the driest deserts in the world. " * 4 + "\n")


@pytest.fixture(scope="module")
def service():
    return DocsService(IngestConfig())


@pytest.fixture()
def upload():
    """A text file where the browser's uploads land (the only folder the handlers read)."""
    folder = Path(tempfile.mkdtemp(prefix="handlers-", dir=uploads_dir()))
    path = folder / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def request(**changes) -> dict:
    """The values the page sends, with the tab's defaults."""
    v = {"files": None, "folder": None, "preview_file": None, "collection": docs_tab.DEFAULT_COLLECTION,
         "splitter": "recursive", "chunk_size": 0, "overlap": -1, "to_delete": None, "query": "", "k": 5}
    return {**v, **changes}


def test_an_upload_becomes_the_file_to_preview(upload):
    picked = docs_tab.upload(request(files=[upload]))
    assert list(picked) == ["preview_file"]
    assert picked["preview_file"]["choices"] == [("notes.txt", upload)] and picked["preview_file"]["value"] == upload
    none = docs_tab.upload(request())
    assert none["preview_file"]["choices"] == [] and none["preview_file"]["value"] is None


def test_preview_cuts_the_first_upload_into_chunk_cards(upload):
    shown = docs_tab.preview(request(files=[upload], chunk_size=200, overlap=40))
    assert list(shown) == ["preview"]
    page = shown["preview"]
    assert "<b>notes.txt</b>" in page and "recursive splitter (size 200, overlap 40)" in page
    assert page.count("<div class='chunk'>") > 3 and "<mark" in page  # the overlap is marked


def test_preview_without_an_upload_asks_for_one():
    with pytest.raises(gr.Error, match="Upload a file first."):
        docs_tab.preview(request())


@pytest.mark.parametrize("changes, says", [
    ({"chunk_size": "big"}, "chunk size must be a whole number"),
    ({"chunk_size": 5}, "chunk size 5 is too small"),
    ({"chunk_size": 100, "overlap": 100}, r"chunk overlap \(100\) must be smaller than chunk size \(100\)"),
    ({"splitter": "words"}, "unknown splitter 'words'"),
])
def test_preview_refuses_bad_splitter_settings(upload, changes, says):
    with pytest.raises(gr.Error, match=says):
        docs_tab.preview(request(files=[upload], **changes))


def test_paths_outside_the_upload_folder_are_refused_without_naming_them(tmp_path, upload):
    outside = tmp_path / "secret.txt"
    outside.write_text("not an upload")
    for v in (request(files=[str(outside)]), request(files=[upload], preview_file=str(outside)),
              request(files=[upload], preview_file="/etc/passwd")):
        with pytest.raises(gr.Error, match="outside the folders this studio may read") as err:
            docs_tab.preview(v)
        assert str(tmp_path) not in str(err.value)
    with pytest.raises(gr.Error, match="outside the folders"):
        docs_tab.ingest(request(files=[str(outside)]), service=None)


def test_too_many_files_at_once_are_refused():
    many = ["x.txt"] * (current_limits().ingest_files + 1)
    with pytest.raises(gr.Error, match="limits.ingest_files"):
        docs_tab.upload(request(files=many))


def test_ingest_without_files_asks_for_them(service):
    with pytest.raises(gr.Error, match="Upload files or a folder first."):
        docs_tab.ingest(request(), service=service)


def test_ingest_then_the_listing_and_search_show_the_file(service, upload):
    steps = []
    done = docs_tab.ingest(request(files=[upload], collection="handler-docs"), service=service,
                           progress=lambda *a, **k: steps.append((a, k)))
    assert set(done) == set(docs_tab.INGESTED)
    assert done["results"][0][:2] == ["notes.txt", "added"] and done["results"][0][2] > 0
    assert done["summary"].startswith("**handler-docs**: 1 added in ")
    assert done["listing"][0][0] == "notes.txt"
    assert done["to_delete"]["choices"] == ["notes.txt"] and done["to_delete"]["value"] is None
    assert "handler-docs" in done["collection"]["choices"] and done["collection"]["value"] == "handler-docs"
    assert steps[0] == ((0,), {"desc": "loading the embedding model"})
    again = docs_tab.ingest(request(files=[upload], collection="handler-docs"), service=service)
    assert again["results"][0][1] == "unchanged"

    found = docs_tab.search(request(collection="handler-docs", query="Which lake is the deepest?"),
                            service=service)
    assert list(found) == ["hits"]
    top = found["hits"].split("<div class='hit'>")[1]
    assert "[1] notes.txt" in top and "Baikal" in top
    listed = docs_tab.show_listing({"collection": "handler-docs"}, service=service)
    assert [r[0] for r in listed["listing"]] == ["notes.txt"]
    loaded = docs_tab.on_load({}, service=service)
    assert set(loaded) == {"collection", "listing", "to_delete", "sharing"}
    assert loaded["sharing"] == "**Private**: only you see it. Embedded with **minilm-l6-v2**."
    assert {"handler-docs", docs_tab.DEFAULT_COLLECTION} <= set(loaded["collection"]["choices"])


def test_search_refuses_an_empty_query_a_bad_k_and_an_unknown_collection(service, upload):
    docs_tab.ingest(request(files=[upload], collection="handler-search"), service=service)
    with pytest.raises(gr.Error, match="the question is empty"):
        docs_tab.search(request(collection="handler-search", query="   "), service=service)
    with pytest.raises(gr.Error, match="k must be a whole number"):
        docs_tab.search(request(collection="handler-search", query="lake", k="many"), service=service)
    with pytest.raises(gr.Error, match="no collection 'no-such-docs'"):
        docs_tab.search(request(collection="no-such-docs", query="lake"), service=service)


def test_delete_asks_for_a_document_then_removes_it(service, upload, monkeypatch):
    told = []
    monkeypatch.setattr(gr, "Info", told.append)
    docs_tab.ingest(request(files=[upload], collection="handler-delete"), service=service)
    with pytest.raises(gr.Error, match="Choose a document to delete."):
        docs_tab.delete(request(collection="handler-delete"), service=service)
    gone = docs_tab.delete(request(collection="handler-delete", to_delete="notes.txt"), service=service)
    assert gone["listing"] == [] and gone["to_delete"]["choices"] == []
    assert told and told[0].startswith("Removed notes.txt (")


def test_refresh_keeps_a_typed_new_name_among_the_collections(service):
    shown = docs_tab.refresh({"collection": "not-yet-ingested"}, service=service)
    assert shown["listing"] == [] and shown["to_delete"]["choices"] == []
    assert "not-yet-ingested" in shown["collection"]["choices"]
    assert shown["collection"]["choices"][-1] == "not-yet-ingested"  # after the collections that exist
    assert shown["sharing"] == ("A new collection is private to you; it will be embedded with "
                                "**minilm-l6-v2**.")
