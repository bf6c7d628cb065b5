"""Installed models: pull through a local copy of the model hub's URL layout (the real huggingface_hub
client end to end), import, list, info, rm, and using a model by name."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, STUDIO, free_port, run_studio
from huggingface_hub import constants
from localhub import GGUF, REPO

from studio import env as studio_env
from studio import modelfacts, modelhub, modelstore
from studio.errors import StudioError
from studio.paths import Roots
from studio.registry import resolve_model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def online(hub, monkeypatch):
    """The client points at the local hub; HF_HUB_OFFLINE=1 is the studio's own default (as in `studio`)."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(studio_env, "_APPLIED", studio_env._APPLIED | {"HF_HUB_OFFLINE"})
    hub.rate, hub.corrupt = None, set()
    hub.requests.clear()
    return hub


def cli_env(hub) -> dict:
    """A user's shell: no HF_HUB_OFFLINE of their own, HF_ENDPOINT at the local hub."""
    return {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")} | {
        "HF_ENDPOINT": hub.url}


def test_pull_a_gguf_with_progress_then_chat_with_it_by_name(online, gguf_path):
    seen = []
    m = modelhub.pull(REPO, GGUF, name="smol-pulled", progress=lambda f, done, total: seen.append((done, total)))
    try:
        size = gguf_path.stat().st_size
        assert seen[0] == (0, size) and seen[-1] == (size, size)  # progress from nothing to everything
        assert m.kind == "chat-gguf" and m.licence == "apache-2.0" and m.source.startswith(f"hub: {REPO}")
        assert sha256(m.path) == sha256(gguf_path)
        assert m.ram > size  # the file plus its cache
        assert not (modelstore.store_dir() / ".partial").exists() or not any(
            (modelstore.store_dir() / ".partial").iterdir())  # nothing left half-done
        row = next(r for r in modelstore.list_models() if r.name == "smol-pulled")
        assert row.path == m.path and row.size == size
        assert resolve_model("smol-pulled").path == m.path.resolve()
        # through the CLI as a user would: the model answers by its new name
        out = run_studio("chat", "What is the capital of France? Answer in one word.", "--model", "smol-pulled",
                         "--temperature", "0", "--json")
        assert out.returncode == 0, out.stderr
        assert "Paris" in json.loads(out.stdout)["text"]
    finally:
        modelstore.remove("smol-pulled")
    assert "smol-pulled" not in {r.name for r in modelstore.list_models()}
    with pytest.raises(StudioError, match="unknown model"):
        resolve_model("smol-pulled")


def test_an_interrupted_pull_resumes_where_it_stopped(online, gguf_path):
    size = gguf_path.stat().st_size
    online.rate = 12e6  # ~8 s for the whole file: time to interrupt it
    proc = subprocess.Popen([STUDIO, "models", "pull", REPO, GGUF, "--name", "smol-resumed"], env=cli_env(online),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    partial = modelstore.store_dir() / ".partial"
    deadline = time.monotonic() + 60
    got = 0
    while time.monotonic() < deadline and got < size // 4:
        got = max((p.stat().st_size for p in partial.rglob("*.part")), default=0) if partial.exists() else 0
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # as a closed laptop lid or a killed terminal would
    proc.wait()
    assert size // 4 <= got < size
    assert "smol-resumed" not in {r.name for r in modelstore.list_models()}  # nothing installed half
    online.rate = None
    online.requests.clear()
    m = modelhub.pull(REPO, GGUF, name="smol-resumed")
    try:
        gets = [r for r in online.requests if r["method"] == "GET" and r["path"].endswith(GGUF)]
        assert len(gets) == 1 and gets[0]["range"], online.requests  # it asked only for the rest
        assert int(gets[0]["range"].removeprefix("bytes=").rstrip("-")) >= size // 4
        assert sha256(m.path) == sha256(gguf_path)
    finally:
        modelstore.remove("smol-resumed")


def test_a_corrupted_download_is_refused_by_its_checksum(online):
    online.corrupt = {GGUF}
    with pytest.raises(StudioError, match="does not match the hub's checksum.*deleted; pull again"):
        modelhub.pull(REPO, GGUF, name="smol-bad")
    assert "smol-bad" not in {r.name for r in modelstore.list_models()}
    assert not list((modelstore.store_dir() / ".partial").rglob(GGUF))  # the bad file is gone


def test_unknown_repos_and_files_and_ambiguous_repos_say_what_to_do(online):
    with pytest.raises(StudioError, match="the hub has no model repo 'TheStudio/nothing-here'"):
        modelhub.pull("TheStudio/nothing-here")
    with pytest.raises(StudioError, match=f"has no file 'missing.gguf'; its GGUF files: {GGUF}"):
        modelhub.pull(REPO, "missing.gguf")
    with pytest.raises(StudioError, match="holds 2 GGUF files: name one.*model.Q4_K_M.gguf"):
        modelhub.pull("TheStudio/two-quants-GGUF")
    for bad in ("no-slash", "../../etc/passwd", "a/b/c", ""):
        with pytest.raises(StudioError, match="OWNER/NAME"):
            modelhub.pull(bad)
    assert not [r for r in online.requests if "etc" in r["path"]]


def test_no_network_gives_a_message_that_says_what_to_do(online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StudioError, match="cannot reach the model hub.*no network.*studio models import"):
        modelhub.pull(REPO, GGUF)
    # a user who set HF_HUB_OFFLINE=1 themselves is obeyed, with the way out
    monkeypatch.setattr(studio_env, "_APPLIED", set())
    with pytest.raises(StudioError, match="HF_HUB_OFFLINE=1 is set.*unset it"):
        modelhub.pull(REPO, GGUF)


def test_pull_a_model_folder_from_the_cli(online):
    out = subprocess.run([STUDIO, "models", "pull", "TheStudio/MiniLM-L6", "--name", "minilm-pulled", "--json"],
                         env=cli_env(online), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    try:
        row = json.loads(out.stdout)
        assert row["kind"] == "embedding" and row["format"] == "hf"
        folder = Path(row["path"])
        assert (folder / "model.safetensors").is_file() and (folder / "1_Pooling" / "config.json").is_file()
        assert not (folder / ".gitattributes").exists()
        from ingest.embeddings import MiniLMEmbeddings

        vec = MiniLMEmbeddings("minilm-pulled", engine="torch").embed_query("reading a CSV file")
        assert len(vec) == 384
    finally:
        modelstore.remove("minilm-pulled")


def test_import_copy_and_link_then_list_info_and_rm(tmp_path, gguf_path):
    out = run_studio("models", "import", str(gguf_path), "--name", "smol-copy", "--json")
    assert out.returncode == 0, out.stderr
    copied = json.loads(out.stdout)
    assert copied["kind"] == "chat-gguf" and copied["licence"] == "apache-2.0"  # from the GGUF header
    assert Path(copied["path"]).is_file() and not Path(copied["path"]).is_symlink()
    minilm = resolve_model("minilm-l6-v2").path
    linked = modelstore.import_model(minilm, "minilm-link", link=True)
    try:
        assert linked.kind == "embedding" and linked.path.is_symlink()
        listing = run_studio("models", "list", "--json")
        names = {r["name"]: r for r in json.loads(listing.stdout)}
        assert {"smollm2-135m-instruct", "minilm-l6-v2", "smol-copy", "minilm-link"} <= set(names)
        assert names["smollm2-135m-instruct"]["path"].endswith(".gguf")  # the older list's fields stay
        assert names["minilm-l6-v2"]["format"] == "hf"
        text = run_studio("models", "info", "smol-copy").stdout
        assert "chat (GGUF)" in text and "block_count" in text and "apache-2.0" in text
        # a name that is taken, a bundled name, a file that is no model: refused, nothing written
        for args, message in ((["--name", "smol-copy"], "installed already"),
                              (["--name", "smollm2-135m-instruct"], "bundled model's name"),
                              (["--name", "../x"], "must be 1-80")):
            out = run_studio("models", "import", str(gguf_path), *args)
            assert out.returncode != 0 and message in out.stderr, out.stderr
        (tmp_path / "notes.txt").write_text("hello")
        (tmp_path / "folder").mkdir()
        with pytest.raises(StudioError, match="not a .gguf file"):
            modelstore.import_model(tmp_path / "notes.txt")
        with pytest.raises(StudioError, match="not a model folder"):
            modelstore.import_model(tmp_path / "folder")
        broken = tmp_path / "broken.gguf"
        broken.write_bytes(gguf_path.read_bytes()[:5000])
        with pytest.raises(StudioError, match="not a readable GGUF"):
            modelstore.import_model(broken)
        for bundled in ("smollm2-135m-instruct", "run:anything"):
            with pytest.raises(StudioError, match="cannot be removed|belongs to its run"):
                modelstore.remove(bundled)
    finally:
        modelstore.remove("minilm-link")
        assert run_studio("models", "rm", "smol-copy").returncode == 0
    assert minilm.is_dir() and (minilm / "config.json").is_file()  # removing a link leaves the original
    assert run_studio("models", "rm", "smol-copy").returncode != 0


def test_import_through_the_web_ui_stays_inside_the_allowed_folders(tmp_path, gguf_path):
    roots = Roots([tmp_path / "allowed"])
    (tmp_path / "allowed").mkdir()
    for path in (str(gguf_path), "/etc/passwd", str(tmp_path / "allowed" / ".." / "x.gguf")):
        with pytest.raises(StudioError, match="outside the folders"):
            modelstore.import_model(path, "sneaky", roots=roots)
    assert "sneaky" not in {m.name for m in modelstore.list_models()}


def test_the_gguf_header_reader_agrees_with_the_gguf_package(gguf_path):
    from gguf import GGUFReader

    facts = modelfacts.gguf_facts(gguf_path)
    reader = GGUFReader(gguf_path, "r")
    arch = reader.fields["general.architecture"].contents()
    assert facts["architecture"] == arch == "llama"
    for key in ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
                "context_length"):
        assert facts[key] == reader.fields[f"{arch}.{key}"].contents(), key
    assert facts["licence"] == reader.fields["general.license"].contents()
    # one conversation's cache of the bundled model: 94 MB for 4096 tokens, as llama.cpp reports it
    assert modelfacts.kv_bytes(facts, 4096) == 2 * 30 * 4096 * 64 * 3 * 2


def test_a_pull_over_the_size_limit_is_refused_before_downloading(online):
    from studio.limits import Limits, configure, current

    before = current()
    configure(Limits(model_download_gb=0.05))  # 50 MB; the GGUF is 98 MB
    try:
        with pytest.raises(StudioError, match="0.1 GB to download; the limit is 0.05 GB"):
            modelhub.pull(REPO, GGUF)
    finally:
        configure(before)
    assert not [r for r in online.requests if r["path"].endswith(GGUF)]  # not a byte was asked for


def test_a_hub_listing_a_file_outside_its_folder_gets_nothing_written(online, tmp_path):
    # a hostile or broken hub could list "../../x": the download refuses before asking for a byte
    from huggingface_hub.utils import tqdm

    with pytest.raises(StudioError, match="lists a file outside its folder"):
        modelhub._download(REPO, "../../evil.gguf", "main", tmp_path / "partial", online.url, tqdm)
    assert not (tmp_path / "evil.gguf").exists() and not online.requests
