"""Ingestion into real Chroma: incremental updates, bad files, a killed run, server mode, CLI."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ingest.config import IngestConfig, SplitterConfig
from ingest.pipeline import Ingestor
from studio.errors import StudioError
from tests.conftest import STUDIO, free_port, run_studio, start_server, stop_process, wait_http
from tests.pdfgen import make_pdf

PAGES = [
    "The Nile is the longest river in Africa and flows north into the Mediterranean Sea.",
    "Mount Kilimanjaro in Tanzania is the highest mountain in Africa at 5895 metres.",
    "The Sahara is the largest hot desert in the world, covering much of North Africa.",
]


@pytest.fixture(scope="module")
def embedder():
    from ingest.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings()


@pytest.fixture()
def ingestor(embedder):
    return Ingestor(IngestConfig(splitter=SplitterConfig("recursive", 300, 50)), embedder=embedder)


@pytest.fixture()
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    make_pdf(folder / "africa.pdf", PAGES)
    (folder / "notes.md").write_text("# Rivers\n\nThe Amazon carries more water than any other river.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "cities.txt").write_text("Nairobi is the capital of Kenya. Lagos is Nigeria's largest city.\n")
    return folder


def stored(ing, collection):
    got = ing.store.get_chunks(collection)
    return list(zip(got["ids"], got["documents"], got["metadatas"], strict=True))


def test_embeddings_match_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    texts = [p for p in PAGES] + ["short", "R is a language for statistics. " * 40]
    ref = SentenceTransformer(str(embedder.spec.path), device="cpu").encode(texts, normalize_embeddings=True)
    ours = embedder.encode(texts)
    assert embedder.engine == "onnx"
    assert ours.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert float((ours * ref).sum(1).min()) >= 0.999
    assert len(embedder.embed_query("hello")) == 384  # the LangChain Embeddings interface


def test_folder_ingest_then_query_finds_the_right_page(ingestor, corpus):
    report = ingestor.ingest([corpus], "geo-basic")
    assert {f.source: f.status for f in report.files} == {
        "africa.pdf": "added", "notes.md": "added", "sub/cities.txt": "added"}
    hit = ingestor.query("geo-basic", "How high is the tallest mountain in Africa?", k=1)[0]
    assert (hit.source, hit.page) == ("africa.pdf", 2)
    assert "Kilimanjaro" in hit.text and 0 < hit.score <= 1
    assert ingestor.query("geo-basic", "capital of Kenya", k=1)[0].source == "sub/cities.txt"
    meta = stored(ingestor, "geo-basic")[0][2]
    assert {"source", "chunk", "chunk_hash", "ingested_at", "version"} <= set(meta)


def test_reingest_skips_unchanged_and_replaces_changed(ingestor, corpus):
    ingestor.ingest([corpus], "geo-incr")
    before = {i for i, _, _ in stored(ingestor, "geo-incr")}
    again = ingestor.ingest([corpus], "geo-incr")
    assert {f.status for f in again.files} == {"unchanged"}
    assert {i for i, _, _ in stored(ingestor, "geo-incr")} == before
    (corpus / "sub" / "cities.txt").write_text("Accra is the capital of Ghana.\n")
    changed = ingestor.ingest([corpus], "geo-incr")
    assert {f.source: f.status for f in changed.files}["sub/cities.txt"] == "updated"
    assert [f.status for f in changed.files].count("unchanged") == 2
    texts = [t for _, t, m in stored(ingestor, "geo-incr") if m["source"] == "sub/cities.txt"]
    assert texts == ["Accra is the capital of Ghana."]  # the old version's chunks are gone


def test_changing_the_splitter_reingests(embedder, corpus):
    Ingestor(IngestConfig(), embedder=embedder).ingest([corpus], "geo-split")
    other = Ingestor(IngestConfig(splitter=SplitterConfig("sentence", 60, 0)), embedder=embedder)
    report = other.ingest([corpus], "geo-split")
    assert {f.status for f in report.files} == {"updated"}
    counts = Counter(m["source"] for _, _, m in stored(other, "geo-split"))
    assert counts["sub/cities.txt"] == 2  # two sentences, two chunks, nothing left of the old split


def test_remove_one_document(ingestor, corpus):
    ingestor.ingest([corpus], "geo-rm")
    assert ingestor.remove("geo-rm", "notes.md") == 1
    assert {m["source"] for _, _, m in stored(ingestor, "geo-rm")} == {"africa.pdf", "sub/cities.txt"}
    assert [r.source for r in ingestor.documents("geo-rm")] == ["africa.pdf", "sub/cities.txt"]
    with pytest.raises(StudioError, match="holds no document 'notes.md'"):
        ingestor.remove("geo-rm", "notes.md")


def test_bad_files_fail_alone(ingestor, corpus):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    (corpus / "archive.zip").write_bytes(b"PK\x03\x04 not really")
    (corpus / ".hidden.txt").write_text("never ingested")
    report = ingestor.ingest([corpus], "geo-bad")
    status = {f.source: f.status for f in report.files}
    assert status == {"africa.pdf": "added", "archive.zip": "failed", "broken.pdf": "failed",
                      "notes.md": "added", "sub/cities.txt": "added"}
    errors = {f.source: f.error for f in report.files if f.error}
    assert "corrupt or unreadable PDF" in errors["broken.pdf"]
    assert "unpack it" in errors["archive.zip"]


def test_symlinks_outside_the_folder_are_not_followed(ingestor, corpus, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is hunter2")
    (corpus / "link.txt").symlink_to(secret)
    (corpus / "inside.txt").symlink_to(corpus / "notes.md")
    report = ingestor.ingest([corpus], "geo-links")
    by = {f.source: f for f in report.files}
    assert by["link.txt"].status == "failed" and "outside the folder" in by["link.txt"].error
    assert by["inside.txt"].status == "added"
    assert not any("hunter2" in t for _, t, _ in stored(ingestor, "geo-links"))


def test_bad_collection_names_and_paths(ingestor, corpus):
    with pytest.raises(StudioError, match="collection name 'a b' is not allowed"):
        ingestor.ingest([corpus], "a b")
    with pytest.raises(StudioError, match="does not exist"):
        ingestor.ingest([corpus / "missing"], "geo-x")
    with pytest.raises(StudioError, match="no collection 'nope'"):
        ingestor.query("nope", "anything")


def test_langchain_vectorstore_reads_the_collection(ingestor, corpus, embedder):
    ingestor.ingest([corpus], "geo-lc")
    docs = ingestor.store.as_vectorstore("geo-lc", embedder).as_retriever(search_kwargs={"k": 1}).invoke(
        "longest river in Africa")
    assert docs[0].metadata["source"] == "africa.pdf" and docs[0].metadata["page"] == 1


# --- a real kill in the middle of an ingestion ---------------------------------------------------

def manifest_rows(home: Path, collection: str) -> int:
    db = home / "manifest.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM files WHERE collection=?", (collection,)).fetchone()[0]


def test_killed_ingest_reruns_to_exactly_one_copy_of_every_chunk(tmp_path, studio_home, ingestor):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(14):
        paras = [f"Document {i}, paragraph {j}: " + " ".join(f"word{i}_{j}_{k}" for k in range(40))
                 for j in range(30)]
        (folder / f"doc{i:02d}.txt").write_text("\n\n".join(paras))
    args = [STUDIO, "ingest", str(folder), "--collection", "killed", "--chunk-size", "300", "--chunk-overlap", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while manifest_rows(studio_home, "killed") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = manifest_rows(studio_home, "killed")
    assert 3 <= done_before < 14, "the kill must land mid-run"
    rerun = run_studio(*args[1:], "--json")
    assert rerun.returncode == 0, rerun.stderr
    statuses = Counter(f["status"] for f in json.loads(rerun.stdout)["files"])
    assert statuses["unchanged"] == done_before and statuses["added"] == 14 - done_before
    chunks = stored(ingestor, "killed")
    per_source: dict[str, list[int]] = {}
    for _, _, meta in chunks:
        per_source.setdefault(meta["source"], []).append(meta["chunk"])
    assert len(per_source) == 14
    for source, indices in per_source.items():
        assert sorted(indices) == list(range(len(indices))), source  # none missing, none twice
    fresh = Ingestor(IngestConfig(splitter=SplitterConfig("recursive", 300, 0)), embedder=ingestor.embedder)
    fresh.ingest([folder], "unkilled")
    assert len(chunks) == fresh.store.count("unkilled")


# --- Chroma server mode ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    proc = start_server([str(Path(sys.executable).parent / "chroma"), "run", "--path", str(data), "--host",
                         "127.0.0.1", "--port", str(port)], data / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/v2/heartbeat", proc, timeout=60)
        yield url
    finally:
        stop_process(proc)


def test_ingest_and_query_through_a_chroma_server(chroma_server, corpus):
    result = run_studio("ingest", str(corpus), "--collection", "remote-geo", "--chroma-url", chroma_server, "--json")
    assert result.returncode == 0, result.stderr
    assert {f["status"] for f in json.loads(result.stdout)["files"]} == {"added"}
    hits = json.loads(run_studio("query", "highest mountain", "--collection", "remote-geo",
                                 "--chroma-url", chroma_server, "--json", "--k", "2").stdout)["hits"]
    assert hits[0]["page"] == 2 and hits[0]["source"] == "africa.pdf"
    listed = run_studio("docs", "list", "--collection", "remote-geo", "--chroma-url", chroma_server, "--json")
    assert len(json.loads(listed.stdout)["documents"]) == 3
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=int(chroma_server.rsplit(":", 1)[1]))
    assert client.get_collection("remote-geo").count() == len(PAGES) + 2  # really stored on the server


def test_unreachable_chroma_server_is_one_line():
    result = run_studio("query", "x", "--collection", "c1c", "--chroma-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"studio: error: cannot reach a Chroma server at "
                                     f"{result.args[-1]}; is `chroma run` up?")


# --- the CLI contract ----------------------------------------------------------------------------

def test_cli_ingest_query_batch_docs(corpus, tmp_path):
    out = run_studio("ingest", str(corpus), "--collection", "cli-geo", "--json")
    data = json.loads(out.stdout)
    assert set(data) >= {"collection", "files", "seconds"}
    assert all(set(f) >= {"source", "status", "chunks", "error"} for f in data["files"])
    q = json.loads(run_studio("query", "longest river", "--collection", "cli-geo", "--json").stdout)
    hit = q["hits"][0]
    assert set(hit) >= {"source", "page", "chunk", "score", "text"} and hit["page"] == 1
    md_hit = json.loads(run_studio("query", "Amazon water", "--collection", "cli-geo", "--json", "--k", "1").stdout)
    assert md_hit["hits"][0]["page"] is None  # formats without pages say so
    batch = tmp_path / "qs.jsonl"
    batch.write_text('{"q": "Kilimanjaro height"}\n{"q": "capital of Kenya", "k": 1}\n')
    lines = run_studio("query", "--batch", str(batch), "--collection", "cli-geo").stdout.strip().splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["q"] for a in answers] == ["Kilimanjaro height", "capital of Kenya"]
    assert answers[0]["hits"][0]["page"] == 2 and len(answers[1]["hits"]) == 1
    rm = run_studio("docs", "rm", "notes.md", "--collection", "cli-geo")
    assert rm.returncode == 0 and "removed notes.md" in rm.stdout
    listed = json.loads(run_studio("docs", "list", "--collection", "cli-geo", "--json").stdout)
    assert [d["source"] for d in listed["documents"]] == ["africa.pdf", "sub/cities.txt"]


def test_cli_partial_failure_exits_1_and_reports(corpus):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 nope")
    result = run_studio("ingest", str(corpus), "--collection", "cli-partial")
    assert result.returncode == 1
    assert "failed    broken.pdf" in result.stdout and "3 added, 1 failed" in result.stdout


@pytest.mark.parametrize("name, ok", [("report.pdf", True), ("../../etc/passwd", True), (".env", False),
                                      ("a..b.txt", False)])
def test_upload_names_are_reduced_to_safe_file_names(name, ok):
    from studio.ui.docs_tab import safe_name

    if ok:
        assert "/" not in safe_name(name) and ".." not in safe_name(name)
    else:
        with pytest.raises(StudioError, match="refusing the upload name"):
            safe_name(name)


def test_cli_collections_and_drop(corpus):
    run_studio("ingest", str(corpus), "--collection", "cli-drop")
    rows = {r["collection"]: r for r in json.loads(run_studio("docs", "collections", "--json").stdout)}
    assert rows["cli-drop"]["documents"] == 3 and rows["cli-drop"]["chunks"] >= 3
    refused = run_studio("docs", "drop", "--collection", "cli-drop")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert run_studio("docs", "drop", "--collection", "cli-drop", "--yes").returncode == 0
    rows = {r["collection"] for r in json.loads(run_studio("docs", "collections", "--json").stdout)}
    assert "cli-drop" not in rows
    gone = run_studio("docs", "list", "--collection", "cli-drop")
    assert gone.returncode == 2 and "no collection 'cli-drop'" in gone.stderr
