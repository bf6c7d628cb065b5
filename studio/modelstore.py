"""Installed models: the bundled ones, models pulled from a model hub, imported files and folders, and
fine-tuned LoRA adapters, with what each is, its size, the RAM it needs and its licence.

>>> [m.name for m in list_models()]                          # bundled, pulled, imported, adapters
>>> pull("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf")   # -> InstalledModel
>>> import_model("/data/models/phi.gguf", name="phi")        # copied into STUDIO_HOME/models/phi
>>> remove("phi")

A pulled or imported model lives in ``STUDIO_HOME/models/NAME/`` with ``studio-model.json`` beside
it (kind, source, licence, checksum, size); :func:`studio.registry.resolve_model` then finds it by
``NAME``, so ``studio chat --model NAME`` and every tab's picker use it.

Downloads use ``huggingface_hub`` for the repo's metadata, file URLs, headers (``HF_TOKEN``) and HTTP
session (``HF_ENDPOINT`` picks the hub). The bytes themselves are fetched here, into
``STUDIO_HOME/models/.partial/``, because huggingface_hub 1.x no longer resumes across runs: it writes
each attempt to a fresh temporary file and deletes it on failure (its PR #4228), so a pull killed at
90% of a 2 GB file would start again from zero; ours asks for the missing bytes (an HTTP range). Each
file's SHA-256 (or git blob id, for small files) is checked against the hub's own record before the
model is installed, and a file that does not match is deleted. Nothing is installed half: a model
folder appears only when complete (a rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
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

from finetune.adapters import list_adapters
from ingest.pipeline import Ingestor
from studio import audit
from studio.accounts import Accounts
from studio.config import StudioConfig, save_settings
from studio.env import LOCAL_USER, applied_offline_default, home_dir, home_lock
from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.paths import Roots, check_name, slug
from studio.registry import BUNDLED, META, backend_for, resolve_model

KINDS = ("chat-gguf", "chat-hf", "embedding", "lora-adapter")
MAX_FILES = 64  # files of one hub repo a pull takes at most (a model folder has a handful)
LICENCES = {"smollm2-135m-instruct": "apache-2.0", "minilm-l6-v2": "apache-2.0"}
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


@dataclass
class InstalledModel:
    """One installed model: ``source`` says where it came from (bundled, hub repo, imported path, run)."""

    name: str
    kind: str  # one of KINDS
    path: Path  # the .gguf file or the model folder
    size: int  # bytes on disk
    ram: int  # bytes a loaded model needs, estimated (see estimate_ram)
    licence: str
    source: str
    removable: bool = True
    details: dict = field(default_factory=dict)

    def row(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def store_dir() -> Path:
    return home_dir("models")


def _admin(user: str, what: str) -> None:
    """Models are the whole studio's: in a shared studio only admins add, remove or assign them."""
    if not Accounts().is_admin(user):
        raise StudioError(f"only an admin may {what}: models are shared by everyone on this studio")


# -- which model each role uses ---------------------------------------------------------------------

CHAT_KINDS = ("chat-gguf", "chat-hf")
ROLES = {"chat": "chat.model", "prompt": "chat.prompt_model", "judge": "chat.judge_model",
         "embedding": "ingest.embed_model"}
ROLE_HELP = {"chat": "Chat (and every command's default)", "prompt": "Prompt Lab",
             "judge": "the `llm` groundedness scorer", "embedding": "new collections' embeddings"}


def _installed_metas() -> list[dict]:
    folders = sorted(store_dir().iterdir())
    return [m for f in folders if f.is_dir() and not f.name.startswith(".") and (m := _read_meta(f)) is not None]


def chat_model_names() -> list[str]:
    """Every installed chat model's name, bundled first (for the pickers of the tabs)."""
    names = [n for n, (_, _, fmt, _) in sorted(BUNDLED.items()) if fmt == "gguf"]
    return names + [m["name"] for m in _installed_metas() if m.get("kind") in CHAT_KINDS]


def embedding_model_names() -> list[str]:
    """Every installed sentence-transformers model's name (what ingest can embed with), bundled first."""
    names = [n for n, (_, _, fmt, _) in sorted(BUNDLED.items()) if fmt == "hf"]
    return names + [m["name"] for m in _installed_metas()
                    if m.get("kind") == "embedding" and not str(m.get("file", "")).endswith(".gguf")]


def roles_of(cfg) -> dict[str, str]:
    """role -> the model it uses under ``cfg`` (a StudioConfig)."""
    c = cfg.chat
    return {"chat": c.model, "prompt": c.prompt_model or c.model, "judge": c.judge_model or c.model,
            "embedding": cfg.ingest.embed_model}


def judge_scorer(chat_cfg) -> str:
    """The groundedness scorer name for the judge role: ``llm:MODEL`` (plain ``llm`` when the chat model is an
    endpoint's and no judge was chosen: an endpoint's model name is no local model)."""
    if chat_cfg.judge_model:
        return f"llm:{chat_cfg.judge_model}"
    return "llm" if chat_cfg.backend == "openai" else f"llm:{chat_cfg.model}"


def set_role(role: str, name: str, cfg=None, user: str = LOCAL_USER) -> dict:
    """Make ``name`` (an installed model of the right kind) the model of ``role``, saved in STUDIO_HOME's
    settings (the studio config's saved layer), and in ``cfg`` (a StudioConfig) when given: a running
    server's config. A new embedding model applies to new collections; each existing one keeps the model
    its vectors came from (recorded first for collections made before the studio kept it) until it is
    re-embedded."""
    _admin(user, "choose the models of the roles")
    if role not in ROLES:
        raise StudioError(f"the role must be one of: {', '.join(ROLES)}")
    if role == "embedding":
        if name not in embedding_model_names():
            raise StudioError(f"{name!r} is not an installed sentence-transformers model; "
                              "`studio models list --kind embedding` shows them")
        cfg = cfg or StudioConfig()
        Ingestor(cfg.ingest, user=user).record_models()  # the old model, on collections that lack it
        updates = {"ingest": {"embed_model": name}}
    elif name not in chat_model_names():
        raise StudioError(f"{name!r} is not an installed chat model; `studio models list --kind chat-gguf` "
                          "shows them (pull or import one first)")
    elif role == "chat":
        updates = {"chat": {"model": name, "backend": backend_for(name)}}
    else:
        updates = {"chat": {ROLES[role].split(".")[1]: name}}
    with home_lock("settings"):
        saved = save_settings(home_dir(), updates)
    audit.record(user, "model.role", name, role=role)
    if cfg is not None:
        for section, values in updates.items():
            for key, value in values.items():
                setattr(getattr(cfg, section), key, value)
    return saved


# -- what a model is --------------------------------------------------------------------------------

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_header(path: Path, want: Callable[[str], bool]) -> dict:
    """The values of the keys ``want`` accepts in a GGUF file's header (format v2/v3), skipping the rest.

    The ``gguf`` package's ``GGUFReader`` builds a numpy array for every field, tokenizer vocabularies
    included: 4.3 s for the bundled 135M model's header here (and more for a 150k-token vocabulary), where
    this skips what it does not need in 0.07 s. Listing models reads the headers of all of them.
    """
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] < 2:
            raise ValueError("not a GGUF v2+ file")
        count, pos, out = struct.unpack_from("<Q", m, 16)[0], 24, {}

        def string(at: int) -> tuple[str, int]:
            n = struct.unpack_from("<Q", m, at)[0]
            return m[at + 8:at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        def value(kind: int, at: int, keep: bool):
            if kind in _SCALARS:
                fmt = "<" + _SCALARS[kind]
                return struct.unpack_from(fmt, m, at)[0], at + struct.calcsize(fmt)
            if kind == 8:
                return string(at)
            if kind == 9:
                inner, n = struct.unpack_from("<IQ", m, at)
                at += 12
                if inner in _SCALARS and not keep:
                    return None, at + n * struct.calcsize("<" + _SCALARS[inner])
                items = []
                for _ in range(n):
                    item, at = value(inner, at, keep)
                    if keep:
                        items.append(item)
                return items, at
            raise ValueError(f"unknown GGUF value type {kind}")

        for _ in range(count):
            key, pos = string(pos)
            kind = struct.unpack_from("<I", m, pos)[0]
            keep = want(key)
            got, pos = value(kind, pos + 4, keep)
            if keep:
                out[key] = got
    return out


def gguf_facts(path: Path) -> dict:
    """Architecture, sizes and licence from a GGUF file's header."""
    shape = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv", "context_length")
    general = ("architecture", "type", "license", "name", "size_label", "file_type")
    found = gguf_header(path, lambda key: key.startswith("general.") or key.partition(".")[2] in shape)
    arch = found.get("general.architecture", "")
    facts = {k: found.get(f"general.{k}") for k in general}
    facts["type"] = facts["type"] or "model"
    facts["licence"] = facts.pop("license") or ""
    facts.update({k: found.get(f"{arch}.{k}") for k in shape})
    return facts


def kv_bytes(facts: dict, n_ctx: int) -> int:
    """A llama.cpp f16 KV cache of ``n_ctx`` tokens: 2 (K and V) x layers x tokens x KV width x 2 bytes."""
    layers, width, heads = facts.get("block_count"), facts.get("embedding_length"), facts.get("attention.head_count")
    kv_heads = facts.get("attention.head_count_kv") or heads
    if not (layers and width and heads):
        return 0
    return 2 * int(layers) * n_ctx * (int(width) // int(heads)) * int(kv_heads) * 2


def estimate_ram(kind: str, path: Path, size: int, facts: dict, n_ctx: int = 4096) -> int:
    """Bytes a loaded model needs, roughly: a GGUF is mapped as it is plus one conversation's KV cache and
    ~10% for compute buffers (the bundled model: 98 MB file + 94 MB cache, estimated 233 MB; measured here,
    2026-11-29: a 4096-token llama_cpp.Llama after one reply adds 208 MB to the Python process);
    a transformers folder is loaded in float32 on CPU, so half-precision weights double."""
    if kind == "chat-gguf" or (kind == "embedding" and path.suffix == ".gguf"):
        return int(size * 1.1) + kv_bytes(facts, n_ctx) + 40 * 2**20
    if kind == "lora-adapter":
        return size
    dtype = str(facts.get("torch_dtype") or "float32")
    widen = 2 if dtype in ("float16", "bfloat16") else 1
    return int(size * widen * 1.2) + 100 * 2**20


def _folder_kind(folder: Path) -> str | None:
    if (folder / "adapter_config.json").is_file():
        return "lora-adapter"
    if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
        return "embedding"
    config = folder / "config.json"
    if config.is_file():
        try:
            archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, ValueError):
            return None
        if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
            return "chat-hf"
        return "embedding" if any(a.endswith("Model") for a in archs) else None
    return None


def _folder_facts(folder: Path) -> dict:
    facts: dict = {}
    for name in ("config.json", "adapter_config.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            facts.update({k: data[k] for k in ("architectures", "torch_dtype", "model_type", "base_model_name_or_path",
                                               "r", "lora_alpha") if k in data})
    readme = folder / "README.md"
    if readme.is_file():  # a model card's front matter: "license: apache-2.0"
        head = readme.read_text(encoding="utf-8", errors="replace")[:4000]
        if head.startswith("---"):
            for line in head.split("---", 2)[1].splitlines():
                if line.strip().lower().startswith("license:"):
                    facts["licence"] = line.split(":", 1)[1].strip().strip("'\"")
    return facts


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def describe_path(path: Path) -> tuple[str, dict]:
    """(kind, facts) of a .gguf file or a model folder; StudioError when it is neither."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise StudioError(f"{path.name} is not a .gguf file; import a GGUF file or a Hugging Face model folder")
        try:
            facts = gguf_facts(path)
        except (ValueError, OSError, struct.error) as exc:
            raise StudioError(f"{path.name} is not a readable GGUF file ({type(exc).__name__}); "
                              "was the download complete?") from None
        if facts["type"] == "adapter":
            return "lora-adapter", facts
        encoder = facts.get("architecture") in ("bert", "nomic-bert", "jina-bert-v2")
        return ("embedding" if encoder else "chat-gguf"), facts
    if path.is_dir():
        kind = _folder_kind(path)
        if kind is None:
            raise StudioError(f"{path.name} is not a model folder the studio can use: it needs a config.json with "
                              "a causal LM or an encoder, a sentence-transformers model, or a PEFT adapter")
        return kind, _folder_facts(path)
    raise StudioError("the model path does not exist")


# -- the store --------------------------------------------------------------------------------------

def _read_meta(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("name") == folder.name else None


def _installed(folder: Path, meta: dict) -> InstalledModel:
    path = folder / meta.get("file", ".")
    kind = meta.get("kind", "chat-gguf")
    facts = meta.get("facts", {})
    size = meta.get("size") or _size(path)
    return InstalledModel(meta["name"], kind, path, size, estimate_ram(kind, path, size, facts),
                          meta.get("licence") or facts.get("licence") or "unknown", meta.get("source", ""),
                          details={k: v for k, v in meta.items() if k in ("sha256", "added", "repo", "revision")}
                          | {"facts": facts})


def _bundled() -> list[InstalledModel]:
    rows = []
    for name, (_, _, fmt, what) in sorted(BUNDLED.items()):
        try:
            spec = resolve_model(name)
        except StudioError as exc:
            rows.append(InstalledModel(name, "chat-gguf" if fmt == "gguf" else "embedding", Path(), 0, 0,
                                       LICENCES.get(name, "unknown"), f"bundled; unavailable: {exc}", False))
            continue
        kind = "chat-gguf" if fmt == "gguf" else "embedding"
        facts = gguf_facts(spec.path) if fmt == "gguf" else _folder_facts(spec.path)
        size = _size(spec.path)
        rows.append(InstalledModel(name, kind, spec.path, size, estimate_ram(kind, spec.path, size, facts),
                                   LICENCES.get(name, "unknown"), f"bundled: {what}", False, {"facts": facts}))
    return rows


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def list_models(user: str = LOCAL_USER, kind: str | None = None) -> list[InstalledModel]:
    """Bundled models, then pulled and imported ones (by name), then ``user``'s fine-tuned adapters."""
    rows = _bundled()
    rows += [_installed(store_dir() / meta["name"], meta) for meta in _installed_metas()]
    for a in list_adapters(user=user):
        size = _size(a.path)
        rows.append(InstalledModel(f"run:{a.name}", "lora-adapter", a.path, size, size, "as its base model",
                                   f"fine-tune run ({a.task}, base {a.base_model})", False,
                                   {"base_model": a.base_model, "task": a.task}))
    return [m for m in rows if kind is None or m.kind == kind]


def info(name: str, user: str = LOCAL_USER) -> InstalledModel:
    for m in list_models(user=user):
        if m.name == name:
            return m
    names = ", ".join(m.name for m in list_models(user=user))
    raise StudioError(f"no installed model {name!r}; installed: {names}")


def _check_new_name(name: str) -> str:
    check_name(name, "model name")
    if name in BUNDLED:
        raise StudioError(f"{name!r} is a bundled model's name; choose another with --name")
    if (store_dir() / name).exists():
        raise StudioError(f"a model named {name!r} is installed already: `studio models rm {name}` first, "
                          "or choose another name with --name")
    return name


def _install(staged: Path, name: str, meta: dict) -> InstalledModel:
    """Move a complete staged folder into place under ``name`` (one rename) with its metadata."""
    _write_json(staged / META, meta | {"name": name, "added": time.strftime("%Y-%m-%d %H:%M:%S")})
    target = store_dir() / name
    try:
        os.rename(staged, target)
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        raise StudioError(f"a model named {name!r} was installed meanwhile; choose another name") from None
    return _installed(target, _read_meta(target) or {})


def import_model(path: str | Path, name: str | None = None, *, link: bool = False,
                 roots: Roots | None = None, user: str = LOCAL_USER) -> InstalledModel:
    """Copy (or, with ``link``, symlink) a .gguf file or a model folder into the store as ``name``.

    With ``roots`` (a path sent through the web UI) the path must lie inside them; the refusal does not say
    whether the path exists.
    """
    _admin(user, "import models")
    src = roots.resolve(path, "model path") if roots is not None else Path(path).expanduser().resolve()
    if not src.exists():
        raise StudioError(f"{Path(path).name or path} does not exist; give a .gguf file or a model folder")
    kind, facts = describe_path(src)
    name = _check_new_name(name or slug(src.stem if src.is_file() else src.name, "model").lower())
    staged = store_dir() / ".partial" / f"import-{name}-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        inner = src.name if src.is_file() else "model"
        if link:
            (staged / inner).symlink_to(src, target_is_directory=src.is_dir())
        elif src.is_file():
            shutil.copy2(src, staged / inner)
        else:
            shutil.copytree(src, staged / inner, symlinks=False)
        size = _size(src)
        audit.record(user, "model.import", name, kind=kind, linked=link)
        return _install(staged, name, {"kind": kind, "file": inner, "size": size, "facts": facts,
                                       "licence": facts.get("licence") or "", "linked": link,
                                       "source": f"imported from {src.name}" + (" (linked)" if link else "")})
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def remove(name: str, user: str = LOCAL_USER, in_use: dict[str, str] | None = None) -> None:
    """Delete an imported or pulled model (its folder; a linked import leaves the original alone). ``in_use``
    (role -> model) keeps a model a role still uses."""
    _admin(user, "remove models")
    if name in BUNDLED:
        raise StudioError(f"{name!r} is bundled with the studio and cannot be removed")
    if name.startswith("run:"):
        raise StudioError("a fine-tuned adapter belongs to its run: delete the run to remove it")
    check_name(name, "model name")
    folder = store_dir() / name
    if _read_meta(folder) is None:
        raise StudioError(f"no installed model {name!r} (`studio models list` shows them)")
    roles = [r for r, m in (in_use or {}).items() if m == name]
    if roles:
        raise StudioError(f"{name} is the model of the {', '.join(roles)} role{'s' if len(roles) > 1 else ''}: "
                          "choose another model for it first")
    trash = store_dir() / ".partial" / f"rm-{name}-{os.getpid()}"
    os.rename(folder, trash)  # gone from the list at once; a crash below leaves only .partial litter
    shutil.rmtree(trash, ignore_errors=True)
    audit.record(user, "model.rm", name)


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
    _admin(user, "pull models")
    if not isinstance(repo, str) or repo.count("/") != 1 or not all(check_name_ok(p) for p in repo.split("/")):
        raise StudioError(f"a hub repo id is OWNER/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF; got {repo!r}")
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")  # read now, not at import
    try:
        with _online():
            api = HfApi(endpoint=endpoint)
            hub = api.model_info(repo, revision=revision, files_metadata=True)
            files = _choose_files(repo, hub.siblings or [], filename)
            base = files[0].rfilename if len(files) == 1 else repo.split("/")[1]
            name = _check_new_name(name or slug(Path(base).stem if len(files) == 1 else base, "model").lower())
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
    return _install(staged, name, {"kind": kind, "file": inner, "size": _size(staged / inner), "facts": facts,
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
