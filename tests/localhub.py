"""The model hub's URL layout, served from a local folder on 127.0.0.1, so the real ``huggingface_hub``
client runs end to end without a network (point ``HF_ENDPOINT`` at :attr:`LocalHub.url`).

``root/OWNER/NAME/...`` is a repo; its files (symlinks are followed) are served under
``/OWNER/NAME/resolve/REVISION/PATH`` with the headers the client reads (``X-Repo-Commit``, ``ETag``,
``Content-Length``, ranges), and ``/api/models/OWNER/NAME[/revision/REV]?blobs=true`` describes it as the
hub does (siblings with sizes, git blob ids and LFS SHA-256 for weights; ``cardData`` from an optional
``.card.json``). Faults for tests: ``rate`` (bytes per second), ``corrupt`` (paths whose bytes are served
altered while their checksum is advertised unchanged). Every request is recorded in ``requests``.

    python tests/localhub.py ROOT [--port 8765]      # serve a folder by hand
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


class LocalHub:
    def __init__(self, root: Path, rate: float | None = None):
        self.root = Path(root)
        self.rate = rate
        self.corrupt: set[str] = set()
        self.requests: list[dict] = []
        self._hashes: dict[tuple, tuple[str, str]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- what a repo holds --------------------------------------------------------------------------
    def repo_dir(self, repo: str) -> Path | None:
        d = self.root / repo
        return d if repo.count("/") == 1 and d.is_dir() else None

    def files(self, repo_dir: Path) -> list[str]:
        return sorted(str(p.relative_to(repo_dir)) for p in repo_dir.rglob("*")
                      if p.is_file() and p.name != ".card.json")

    def hashes(self, path: Path) -> tuple[str, str]:
        """(sha256, git blob id) of a file, remembered by path, size and time."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime)
        if key not in self._hashes:
            data = path.read_bytes()
            blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()  # noqa: S324 - git's id
            self._hashes[key] = (hashlib.sha256(data).hexdigest(), blob)
        return self._hashes[key]

    def commit(self, repo_dir: Path) -> str:
        listing = "\n".join(f"{f}:{(repo_dir / f).stat().st_size}" for f in self.files(repo_dir))
        return hashlib.sha1(listing.encode()).hexdigest()  # noqa: S324 - a stand-in commit id

    def info(self, repo: str, repo_dir: Path) -> dict:
        siblings = []
        for f in self.files(repo_dir):
            path = repo_dir / f
            sha, blob = self.hashes(path)
            row = {"rfilename": f, "size": path.stat().st_size, "blobId": blob}
            if f.endswith(LFS_SUFFIXES):
                row["lfs"] = {"size": path.stat().st_size, "sha256": sha, "pointerSize": 134}
                row["blobId"] = hashlib.sha1(sha.encode()).hexdigest()  # noqa: S324 - the pointer's id
            siblings.append(row)
        card = repo_dir / ".card.json"
        return {"id": repo, "modelId": repo, "sha": self.commit(repo_dir), "private": False, "tags": [],
                "siblings": siblings, "cardData": json.loads(card.read_text()) if card.is_file() else {}}

    # -- serving ------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append({"method": h.command, "path": path, "range": h.headers.get("Range")})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            repo_dir = self.repo_dir(m.group(1))
            if repo_dir is None:
                return self.error(h, 404, "RepoNotFound", "Repository not found")
            return self.send(h, 200, json.dumps(self.info(m.group(1), repo_dir)).encode(),
                             {"Content-Type": "application/json"}, head)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo_dir = self.repo_dir(m.group(1))
            if repo_dir is None:
                return self.error(h, 404, "RepoNotFound", "Repository not found")
            f = m.group(3)
            target = repo_dir / f
            if ".." in Path(f).parts or not target.is_file() or target.name == ".card.json":
                return self.error(h, 404, "EntryNotFound", "Entry not found")
            return self.send_file(h, m.group(1), repo_dir, f, head)
        return self.error(h, 404, None, "Not found")

    def error(self, h, code: int, error_code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json"} | ({"X-Error-Code": error_code} if error_code else {})
        self.send(h, code, body, headers, h.command == "HEAD")

    def send(self, h, code: int, body: bytes, headers: dict, head: bool) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def send_file(self, h, repo: str, repo_dir: Path, f: str, head: bool) -> None:
        path = repo_dir / f
        size = path.stat().st_size
        sha, blob = self.hashes(path)
        start = 0
        if (r := h.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-", r.strip())):
            start = min(int(m.group(1)), size)
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", self.commit(repo_dir))
        h.send_header("ETag", f'"{sha if f.endswith(LFS_SUFFIXES) else blob}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(size - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        if head:
            return
        chunk = 256 * 1024
        with path.open("rb") as src:
            src.seek(start)
            pos = start
            while block := src.read(chunk):
                if f in self.corrupt and pos <= size // 2 < pos + len(block):  # one byte changed mid-file
                    i = size // 2 - pos
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1:]
                try:
                    h.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                pos += len(block)
                if self.rate:
                    time.sleep(len(block) / self.rate)


REPO = "TheStudio/SmolLM2-135M-Instruct-GGUF"  # the repos bundled_hub() makes
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_hub(root: Path) -> LocalHub:
    """A hub of three repos made from the bundled models (files linked, not copied): the GGUF with a licence on
    its card (REPO), two quantizations of it (TheStudio/two-quants-GGUF), and the embedding model as a Hugging
    Face folder (TheStudio/MiniLM-L6)."""
    from studio.registry import resolve_model  # (conftest imports this module before it sets STUDIO_HOME)

    gguf = resolve_model("smollm2-135m-instruct").path
    one = root / REPO
    one.mkdir(parents=True)
    (one / GGUF).symlink_to(gguf)
    (one / ".card.json").write_text(json.dumps({"license": "apache-2.0"}))
    (one / "README.md").write_text("# SmolLM2 135M, Q4_1\n")
    two = root / "TheStudio/two-quants-GGUF"
    two.mkdir(parents=True)
    for name in ("model.Q4_1.gguf", "model.Q4_K_M.gguf"):
        (two / name).symlink_to(gguf)
    minilm = resolve_model("minilm-l6-v2").path
    folder = root / "TheStudio/MiniLM-L6"
    for f in minilm.rglob("*"):
        if f.is_file():
            (folder / f.relative_to(minilm)).parent.mkdir(parents=True, exist_ok=True)
            (folder / f.relative_to(minilm)).symlink_to(f)
    return LocalHub(root)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    hub = LocalHub(Path(a.root))
    print(hub.start(a.port), file=sys.stderr)
    threading.Event().wait()
