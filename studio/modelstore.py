"""Installed models: the bundled ones, models pulled from a model hub (:mod:`studio.modelhub`), imported
files and folders, and fine-tuned LoRA adapters, with what each is, its size, the RAM it needs and its
licence (:mod:`studio.modelfacts`), and which model each role uses.

>>> [m.name for m in list_models()]                          # bundled, pulled, imported, adapters
>>> import_model("/data/models/phi.gguf", name="phi")        # copied into STUDIO_HOME/models/phi
>>> remove("phi")

A pulled or imported model lives in ``STUDIO_HOME/models/NAME/`` with ``studio-model.json`` beside
it (kind, source, licence, checksum, size); :func:`studio.registry.resolve_model` then finds it by
``NAME``, so ``studio chat --model NAME`` and every tab's picker use it. Nothing is installed half: a
model folder appears only when complete (a rename).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.adapters import list_adapters
from ingest.pipeline import Ingestor
from studio import audit
from studio.accounts import Accounts
from studio.config import StudioConfig, save_settings
from studio.env import LOCAL_USER, home_dir, home_lock
from studio.errors import StudioError
from studio.modelfacts import describe_path, estimate_ram, folder_facts, gguf_facts, size_of
from studio.paths import Roots, check_name, slug
from studio.registry import BUNDLED, META, backend_for, resolve_model

KINDS = ("chat-gguf", "chat-hf", "embedding", "lora-adapter")
LICENCES = {"smollm2-135m-instruct": "apache-2.0", "minilm-l6-v2": "apache-2.0"}
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


def admin_only(user: str, what: str) -> None:
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
    admin_only(user, "choose the models of the roles")
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
    size = meta.get("size") or size_of(path)
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
        facts = gguf_facts(spec.path) if fmt == "gguf" else folder_facts(spec.path)
        size = size_of(spec.path)
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
        size = size_of(a.path)
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


def check_new_name(name: str) -> str:
    check_name(name, "model name")
    if name in BUNDLED:
        raise StudioError(f"{name!r} is a bundled model's name; choose another with --name")
    if (store_dir() / name).exists():
        raise StudioError(f"a model named {name!r} is installed already: `studio models rm {name}` first, "
                          "or choose another name with --name")
    return name


def install(staged: Path, name: str, meta: dict) -> InstalledModel:
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
    admin_only(user, "import models")
    src = roots.resolve(path, "model path") if roots is not None else Path(path).expanduser().resolve()
    if not src.exists():
        raise StudioError(f"{Path(path).name or path} does not exist; give a .gguf file or a model folder")
    kind, facts = describe_path(src)
    name = check_new_name(name or slug(src.stem if src.is_file() else src.name, "model").lower())
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
        size = size_of(src)
        audit.record(user, "model.import", name, kind=kind, linked=link)
        return install(staged, name, {"kind": kind, "file": inner, "size": size, "facts": facts,
                                       "licence": facts.get("licence") or "", "linked": link,
                                       "source": f"imported from {src.name}" + (" (linked)" if link else "")})
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def remove(name: str, user: str = LOCAL_USER, in_use: dict[str, str] | None = None) -> None:
    """Delete an imported or pulled model (its folder; a linked import leaves the original alone). ``in_use``
    (role -> model) keeps a model a role still uses."""
    admin_only(user, "remove models")
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
