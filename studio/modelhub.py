"""Pulling models from a model hub into the store (:mod:`studio.modelstore`).

>>> pull("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf")   # -> InstalledModel

Downloads use ``huggingface_hub`` for the repo's metadata, file URLs, headers (``HF_TOKEN``) and HTTP
session (``HF_ENDPOINT`` picks the hub). The bytes themselves are fetched here, into
``STUDIO_HOME/models/.partial/``, because huggingface_hub 1.x no longer resumes across runs: it writes
each attempt to a fresh temporary file and deletes it on failure (its PR #4228), so a pull killed at
90% of a 2 GB file would start again from zero; ours asks for the missing bytes (an HTTP range). Each
file's SHA-256 (or git blob id, for small files) is checked against the hub's own record before the
model is installed, and a file that does not match is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_session, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status
from huggingface_hub.utils import tqdm as hub_tqdm

from studio import audit
from studio.env import LOCAL_USER, applied_offline_default, home_lock
from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.modelfacts import describe_path, size_of
from studio.modelstore import InstalledModel, admin_only, check_new_name, install, store_dir
from studio.paths import check_name, slug

MAX_FILES = 64  # files of one hub repo a pull takes at most (a model folder has a handful)
# Suggestions shown by the Models tab and `studio models list --suggest`: not shipped, pulled on request.
# Repos, files, sizes and licences as the hub lists them (checked 2026-11 from stored hub pages; this machine
# has no network to pull them); RAM: the file plus one conversation's 4096-token cache, as estimate_ram counts.
SUGGESTED = [
    {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
     "kind": "chat-gguf", "licence": "apache-2.0", "size": "0.5 GB", "ram": "~0.6 GB",
     "why": "a 0.5B instruct model: far fewer wrong sentences than the bundled 135M, still quick on 2 cores"},
    {"repo": "bartowski/SmolLM2-1.7B-Instruct-GGUF", "file": "SmolLM2-1.7B-Instruct-Q4_K_M.gguf",
     "kind": "chat-gguf", "licence": "apache-2.0", "size": "1.06 GB", "ram": "~2.0 GB",
     "why": "the bundled model's big sibling: the same chat template, much better answers, several times slower"},
    {"repo": "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "file": "qwen2.5-1.5b-instruct-q4_k_m.gguf",
     "kind": "chat-gguf", "licence": "apache-2.0", "size": "1.1 GB", "ram": "~1.4 GB",
     "why": "a capable judge for the `llm` groundedness scorer on a laptop"},
    {"repo": "sentence-transformers/all-MiniLM-L12-v2", "file": None,
     "kind": "embedding", "licence": "apache-2.0", "size": "0.13 GB", "ram": "~0.5 GB",
     "why": "a deeper MiniLM for embeddings (a collection switched to it is re-embedded)"},
]




# -- pulling from a hub -----------------------------------------------------------------------------

@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Let huggingface_hub reach the network for one explicit pull when HF_HUB_OFFLINE=1 is only the studio's
    own default (studio.env); a user who set it themselves gets the offline message instead."""
    if not constants.HF_HUB_OFFLINE:
        yield
        return
    if not applied_offline_default("HF_HUB_OFFLINE"):
        raise StudioError("HF_HUB_OFFLINE=1 is set, so nothing is downloaded: unset it to pull, or download the "
                          "file elsewhere and `studio models import PATH`")
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = True


def _git_blob_id(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's own object id
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hub_error(exc: BaseException, repo: str, endpoint: str) -> StudioError:
    if isinstance(exc, GatedRepoError):
        return StudioError(f"{repo} is gated: accept its licence on the hub and set HF_TOKEN, then pull again")
    if isinstance(exc, RepositoryNotFoundError):
        return StudioError(f"the hub has no model repo {repo!r} (check the id, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF; "
                           "`studio models list --suggest` shows some)")
    if isinstance(exc, RevisionNotFoundError):
        return StudioError(f"{repo} has no such revision")
    if isinstance(exc, EntryNotFoundError):
        return StudioError(f"{repo} has no such file")
    if isinstance(exc, (httpx.TransportError, OfflineModeIsEnabled, OSError)):
        return StudioError(f"cannot reach the model hub at {endpoint} (no network?): connect and pull again "
                           "(a partial download resumes), or download the file on another machine and "
                           "`studio models import PATH`")
    if isinstance(exc, HfHubHTTPError):
        code = exc.response.status_code if exc.response is not None else "?"
        return StudioError(f"the model hub answered {code} for {repo}; try again later")
    return StudioError(f"pulling {repo} failed: {type(exc).__name__}")


def _choose_files(repo: str, siblings: list, filename: str | None) -> list:
    names = {s.rfilename: s for s in siblings}
    if filename:
        if filename not in names:
            ggufs = [n for n in names if n.endswith(".gguf")]
            raise StudioError(f"{repo} has no file {filename!r}" +
                              (f"; its GGUF files: {', '.join(sorted(ggufs)[:12])}" if ggufs else ""))
        if not filename.endswith(".gguf"):
            raise StudioError(f"{filename} is not a .gguf file: give a GGUF file, or no file to take the whole "
                              "model folder")
        return [names[filename]]
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if len(ggufs) == 1:
        return [names[ggufs[0]]]
    if ggufs:
        raise StudioError(f"{repo} holds {len(ggufs)} GGUF files: name one, e.g. "
                          f"`studio models pull {repo} {next((g for g in ggufs if 'q4_k_m' in g.lower()), ggufs[0])}`"
                          f" (Q4_K_M is a good size for a CPU); all: {', '.join(ggufs[:12])}")
    if "config.json" not in names:
        raise StudioError(f"{repo} holds neither a .gguf file nor a config.json: not a model the studio can use")
    # a Hugging Face model folder: its config, tokenizer and safetensors weights (no duplicate formats)
    skip = (".bin", ".h5", ".msgpack", ".ot", ".onnx", ".pt", ".pth", ".tflite", ".mlmodel", ".gguf")
    chosen = [s for n, s in names.items() if not n.endswith(skip) and not n.startswith((".", "onnx/", "openvino/"))]
    if not any(n.endswith(".safetensors") for n in names):
        raise StudioError(f"{repo} has no safetensors weights; the studio loads only those (never pickled weights)")
    if len(chosen) > MAX_FILES:
        raise StudioError(f"{repo} has {len(chosen)} files; a pull takes at most {MAX_FILES}")
    return chosen


def pull(repo: str, filename: str | None = None, *, name: str | None = None, revision: str | None = None,
         progress: Callable[[str, int, int], None] | None = None, tqdm_class=None,
         user: str = LOCAL_USER) -> InstalledModel:
    """Download a GGUF file (or, with no file and no GGUF in the repo, the model folder) from the hub.

    ``progress(file, done_bytes, total_bytes)`` is called as files complete; ``tqdm_class`` (e.g. Gradio's
    tracked tqdm) shows byte progress. Each file's checksum is checked against the hub's record.
    """
    admin_only(user, "pull models")
    if not isinstance(repo, str) or repo.count("/") != 1 or not all(check_name_ok(p) for p in repo.split("/")):
        raise StudioError(f"a hub repo id is OWNER/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF; got {repo!r}")
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")  # read now, not at import
    try:
        with _online():
            api = HfApi(endpoint=endpoint)
            hub = api.model_info(repo, revision=revision, files_metadata=True)
            files = _choose_files(repo, hub.siblings or [], filename)
            base = files[0].rfilename if len(files) == 1 else repo.split("/")[1]
            name = check_new_name(name or slug(Path(base).stem if len(files) == 1 else base, "model").lower())
            partial = store_dir() / ".partial" / f"pull-{slug(repo)}-{(hub.sha or 'main')[:12]}"
            total, done = sum(s.size or 0 for s in files), 0
            _check_room(repo, total)
            for s in files:
                if progress:
                    progress(s.rfilename, done, total)
                got = _download(repo, s.rfilename, hub.sha or revision or "main", partial, endpoint,
                                tqdm_class or hub_tqdm)
                _verify(got, s)
                done += s.size or 0
            if progress:
                progress("", done, total)
    except StudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one sentence that says what to do
        raise _hub_error(exc, repo, endpoint) from None
    staged = store_dir() / ".partial" / f"staged-{name}-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    if len(files) == 1:
        staged.mkdir(parents=True)
        os.replace(partial / files[0].rfilename, staged / Path(files[0].rfilename).name)
        shutil.rmtree(partial, ignore_errors=True)
        inner = Path(files[0].rfilename).name
    else:
        staged.mkdir(parents=True)
        os.rename(partial, staged / "model")
        inner = "model"
    kind, facts = describe_path(staged / inner)
    card = getattr(hub, "card_data", None)
    licence = (getattr(card, "license", None) if card is not None else None) or facts.get("licence") or ""
    sha = files[0].lfs.sha256 if len(files) == 1 and files[0].lfs else None
    audit.record(user, "model.pull", name, repo=repo, file=files[0].rfilename if len(files) == 1 else "",
                 revision=hub.sha or "")
    return install(staged, name, {"kind": kind, "file": inner, "size": size_of(staged / inner), "facts": facts,
                                   "licence": str(licence), "repo": repo, "revision": hub.sha, "sha256": sha,
                                   "source": f"hub: {repo}" + (f" / {files[0].rfilename}" if len(files) == 1 else "")})


CHUNK = 1 << 20


def _check_room(repo: str, total: int) -> None:
    """Refuse a download over ``limits.model_download_gb`` or larger than the free disk, before it starts."""
    most = current_limits().model_download_gb
    if total > most * 1e9:
        raise StudioError(f"{repo}: {total / 1e9:.1f} GB to download; the limit is {most:g} GB "
                          "(limits.model_download_gb): pick a smaller file, e.g. a Q4_K_M GGUF")
    free = shutil.disk_usage(store_dir()).free
    if total > free * 0.95:
        raise StudioError(f"{repo}: {total / 1e9:.1f} GB to download and {free / 1e9:.1f} GB free on the "
                          "studio home's disk: free some space first")


def _download(repo: str, filename: str, revision: str, partial: Path, endpoint: str, tqdm_class) -> Path:
    """``filename`` of ``repo`` into ``partial`` (same path inside), resuming a ``.part`` file an earlier,
    interrupted pull left: the hub is asked only for the bytes after it. One process at a time per file."""
    target = partial / filename
    if not target.resolve().is_relative_to(partial.resolve()):
        raise StudioError(f"{repo} lists a file outside its folder ({filename!r}); it was not downloaded")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with home_lock("pull", str(part)):
        if target.is_file():  # complete already (a pull that stopped at a later file)
            return target
        headers = build_hf_headers()
        url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
        size = get_hf_file_metadata(url, headers=headers, endpoint=endpoint).size
        start = part.stat().st_size if part.is_file() else 0
        if size is not None and start > size:  # not this file's beginning: start again
            part.unlink()
            start = 0
        if start:
            headers["Range"] = f"bytes={start}-"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                  timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as resp:
            hf_raise_for_status(resp)
            if start and resp.status_code != 206:  # the server sent the whole file: take it from the top
                start = 0
            with part.open("ab" if start else "wb") as out, tqdm_class(
                    total=size, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=Path(filename).name) as bar:
                for block in resp.iter_bytes(CHUNK):
                    out.write(block)
                    bar.update(len(block))
        if size is not None and part.stat().st_size != size:
            raise StudioError(f"the download of {filename} stopped at {part.stat().st_size:,} of {size:,} bytes; "
                              "pull again to resume")
        os.replace(part, target)
    return target


def check_name_ok(part: str) -> bool:
    try:
        check_name(part)
    except StudioError:
        return False
    return True


def _verify(path: Path, sibling) -> None:
    """The downloaded file matches the hub's SHA-256 (LFS files) or git blob id (small files); else deleted."""
    if sibling.lfs is not None:
        expected, got = sibling.lfs.sha256, sha256_of(path)
    elif sibling.blob_id:
        expected, got = sibling.blob_id, _git_blob_id(path)
    else:
        return
    if got != expected:
        path.unlink(missing_ok=True)
        raise StudioError(f"{sibling.rfilename} does not match the hub's checksum (expected {expected[:12]}..., "
                          f"got {got[:12]}...): the file was deleted; pull again")
