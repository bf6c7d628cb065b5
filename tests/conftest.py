"""Shared fixtures: a fresh STUDIO_HOME, the bundled models loaded once, real servers on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from localhub import bundled_hub

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUDIO = str(BIN / "studio")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def studio_home(tmp_path_factory) -> Path:
    """Every test session starts with an empty studio home (set before any studio import)."""
    home = Path(os.environ.get("STUDIO_TEST_HOME") or tmp_path_factory.mktemp("studio-home"))
    os.environ["STUDIO_HOME"] = str(home)
    # one install key for every test session: the passage delimiters it keys are part of the prompt, so a
    # random key per session made the bundled model's answers (and the tests that read them) vary by run
    key = home / "secret.key"
    if not key.exists():
        key.write_bytes(hashlib.sha256(b"genai-studio test install").digest())
        key.chmod(0o600)
    from studio.env import apply_offline_defaults

    apply_offline_defaults()
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Start a server with its output in ``log`` (a pipe nobody reads would fill and block it)."""
    fh = open(log, "w")  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200, failing early (with the server's log) if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = Path(proc.stdout.name).read_text() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_studio(*args: str, env: dict | None = None, timeout: float = 300,
               input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script the way a user would (``input``: what it reads on stdin)."""
    return subprocess.run([STUDIO, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT, input=input)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    from studio.registry import resolve_model

    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def llamacpp():
    from studio.backends import load_backend

    backend = load_backend("llamacpp", "smollm2-135m-instruct")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_backend():
    from studio.backends import load_backend

    return load_backend("hf", "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gen_run(tmp_path_factory):
    """(run folder, status) of a real 12-step LoRA run on the capital records (q_proj, v_proj, r=8): enough for
    the record format. Tests that change the folder work on a copy."""
    from finetune.config import FinetuneConfig
    from finetune.train import run_finetune

    run = tmp_path_factory.mktemp("ft") / "gen"
    cfg = FinetuneConfig(data="configs/finetune/data/capital_records.jsonl", steps=12, batch_size=8, lr=2e-3,
                         eval_every=6, eval_examples=3, max_length=96, r=8, alpha=16,
                         target_modules=["q_proj", "v_proj"])
    status = run_finetune(cfg, run)
    return run, status


@pytest.fixture(scope="session")
def llama_server(gguf_path, tmp_path_factory):
    """A real llama-cpp-python OpenAI-compatible server on 127.0.0.1; yields its base URL."""
    port = free_port()
    proc = start_server(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "2", "--n_ctx", "2048"],
        tmp_path_factory.mktemp("llama-server") / "server.log",
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(base + "/models", proc)
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; in CI its absence is a failure, never a silent skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed; .ci/run must apt-get install it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def logged_in(browser, url: str, name: str, height: int = 1400):
    """A new browser context on ``url``, logged in as ``name`` (password ``NAME-password``), the Chat tab up."""
    page = browser.new_context(viewport={"width": 1400, "height": height}).new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("input[type=password]", timeout=30_000)
    page.locator("input").first.fill(name)
    page.fill("input[type=password]", f"{name}-password")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#chat-input textarea", timeout=60_000)
    return page


@contextlib.contextmanager
def serving(log_dir: Path, *args: str, env: dict | None = None):
    """`studio [ARGS...] serve --port P` on a free loopback port, as a user starts it; yields its URL.

    ``args`` go before ``serve`` (``--set key=value``); ``--no-preload`` etc. can follow ``"serve"``.
    """
    port = free_port()
    argv = [STUDIO, *args] if "serve" in args else [STUDIO, *args, "serve"]
    proc = start_server([*argv, "--port", str(port)], log_dir / f"serve-{port}.log", cwd=ROOT,
                        env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, proc)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def studio_server(studio_home, tmp_path_factory):
    """`studio serve` as a user starts it, on a free loopback port; yields the URL."""
    with serving(tmp_path_factory.mktemp("studio-serve")) as url:
        yield url


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The model hub's URL layout on 127.0.0.1, serving repos made from the bundled models (tests/localhub.py)."""
    server = bundled_hub(tmp_path_factory.mktemp("hub"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def fresh_home(tmp_path, monkeypatch) -> Path:
    """An empty studio home for one test (STUDIO_HOME points at it until the test ends)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home
