"""Configs: one YAML file plus ``key=value`` overrides -> one dataclass.

>>> cfg = load_config(StudioConfig, "configs/studio.yaml", ["generation.temperature=0.2"])
>>> cfg.generation.temperature
0.2

Nested dataclasses are addressed with dotted keys. The classes stay plain dataclasses (code builds
them directly; their ``check()`` methods bound sizes); what comes from a file or an override is
validated by pydantic v2 over the same dataclasses, with unknown keys forbidden (:func:`config_class`
marks each one). An unknown key, a value of the wrong type or outside its allowed values, or a
malformed file raises :class:`~studio.errors.StudioError` naming the key, the value, and the keys or
values that are allowed. ``metadata={"help": ...}`` on a field is what :func:`describe_keys` shows
in ``--help``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from ingest.config import IngestConfig
from studio.errors import StudioError
from studio.limits import Limits
from studio.rag.config import RagConfig
from studio.schema import config_class

T = TypeVar("T")


@config_class
@dataclass
class GenerationConfig:
    """Sampling settings shared by every chat backend."""

    # SmolLM2's model card recommends 0.2 / 0.9; a 135M model rambles at the usual 0.7
    temperature: float = field(default=0.2, metadata={"help": "0 = greedy"})
    top_p: float = 0.9
    top_k: int = 40
    max_tokens: int = field(default=512, metadata={"help": "maximum tokens to generate"})
    seed: int = field(default=0, metadata={"help": "same seed + settings = same output"})
    stop: list[str] = field(default_factory=list)


@config_class
@dataclass
class ChatModelConfig:
    """Which model answers, and through which backend."""

    backend: Literal["llamacpp", "hf", "openai"] = field(default="llamacpp",
                                                         metadata={"help": "llamacpp | hf | openai"})
    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "registry name, .gguf path, HF folder, or the endpoint's model name"},
    )
    prompt_model: str | None = field(default=None, metadata={
        "help": "the Prompt Lab's model (null = chat.model); set in the Models tab or `studio models use`"})
    judge_model: str | None = field(default=None, metadata={
        "help": "the `llm` groundedness scorer's model (null = chat.model)"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint"})
    api_key: str | None = field(default=None, metadata={
        "help": "sent to base_url only; prefer $STUDIO_API_KEY (or $OPENAI_API_KEY) or --api-key-file"})
    system_prompt: str | None = None
    n_ctx: int = 4096
    n_threads: int = field(default=0, metadata={"help": "0 = one per core"})
    parallel: int = field(default=8, metadata={
        "help": "conversations the server's llama.cpp model decodes together (more wait for a slot)"})
    timeout: float = field(default=120.0, metadata={"help": "seconds, openai backend"})

    def key(self) -> str | None:
        """The API key that belongs to ``base_url``: ``api_key``, else $STUDIO_API_KEY, else $OPENAI_API_KEY."""
        return self.api_key or os.environ.get("STUDIO_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@config_class
@dataclass
class ServerConfig:
    """The web UI's address and access."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: str | None = field(default=None, metadata={
        "help": "USER:PASS, required with share or a non-loopback host; prefer $STUDIO_AUTH or --auth-file"})
    public_names: list[str] = field(default_factory=list, metadata={
        "help": "host names (as browsers send them) the server answers besides loopback and its own address"})
    preload: bool = field(default=True, metadata={"help": "load the chat model at start-up"})
    concurrency: int = field(default=8, metadata={"help": "replies the page streams at once (Gradio's queue)"})
    redraws_per_second: float = field(default=8.0, metadata={
        "help": "how often a streaming reply is redrawn in the page (every token: 1000); each redraw is server "
                "work the model's threads wait for on a small machine"})

    def __post_init__(self):
        if not 0 < self.redraws_per_second <= 1000:
            raise StudioError(f"server.redraws_per_second must be above 0 and at most 1000, "
                              f"got {self.redraws_per_second:g}")

    def exposed(self) -> bool:
        """True when people other than this machine's user can reach the server."""
        return self.share or self.host not in LOOPBACK

    def login(self, accounts=None):
        """What Gradio's ``auth`` gets: the accounts' check when ``accounts`` (:class:`studio.accounts.Accounts`)
        has any, else ``auth`` as (user, password); refuses ``share`` or a non-loopback host with neither.

        A public link or an address on the network without a login would hand the machine's
        models and files to anyone who can reach it.
        """
        if accounts is not None and accounts.exist():
            if self.auth:
                raise StudioError("this studio has accounts (`studio users list`): everyone logs in with "
                                  "their own; drop --auth / $STUDIO_AUTH / server.auth")
            return accounts.check
        if not self.auth:
            if self.share:
                raise StudioError("--share makes the studio public: add accounts (`studio users add NAME --admin`) "
                                  "or --auth USER:PASS (or server.auth)")
            if self.host not in LOOPBACK:
                raise StudioError(f"serving on {self.host} makes the studio reachable from the network: add "
                                  "accounts (`studio users add NAME --admin`) or --auth USER:PASS (or $STUDIO_AUTH, "
                                  "--auth-file, server.auth), or serve on 127.0.0.1")
            return None
        user, sep, password = self.auth.partition(":")
        if not sep or not user or not password:
            raise StudioError("--auth must look like USER:PASS (both non-empty)")
        return user, password


@config_class
@dataclass
class SecurityConfig:
    """What people using the web UI may point the server at."""

    allowed_roots: list[str] = field(default_factory=list, metadata={
        "help": "folders the web UI may read besides uploads, STUDIO_HOME and configs/"})
    allowed_base_urls: list[str] = field(default_factory=list, metadata={
        "help": "OpenAI-compatible endpoints users may type in the UI when the studio is shared "
                "(chat.base_url is always allowed; a local studio allows any)"})


@config_class
@dataclass
class JobsConfig:
    """Background jobs (training runs)."""

    max_running: int = field(default=1, metadata={"help": "jobs running at once; the rest queue"})


@config_class
@dataclass
class StudioConfig:
    """The studio's defaults: ``configs/studio.yaml`` holds exactly these values."""

    chat: ChatModelConfig = field(default_factory=ChatModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: Limits = field(default_factory=Limits)


# Which dataclass each file under configs/ maps onto (by path relative to configs/; a folder
# entry ends with "/"). Later features add their folders here.
CONFIG_KINDS: dict[str, type | str] = {
    "studio.yaml": StudioConfig,
    "sampling/": "generative.sampling_runs:SamplingConfig",  # imported only when asked for
    "prompts/": "studio.prompting.bench:PromptSuite",
    "eval/": "eval.suite:EvalSuite",
    "generative/": "generative.train:GenConfig",
    "finetune/": "finetune.config:FinetuneConfig",
}


def config_class_for(path: str | Path, root: str | Path = "configs") -> type:
    """The dataclass a file under ``root`` maps onto, by its relative path."""
    rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    for key, cls in CONFIG_KINDS.items():
        if rel == key or (key.endswith("/") and rel.startswith(key)):
            if isinstance(cls, str):
                import importlib

                module, name = cls.split(":")
                return getattr(importlib.import_module(module), name)
            return cls
    raise StudioError(f"no config kind is registered for {rel}; known: {', '.join(CONFIG_KINDS)}")


def read_secret(path: str | Path, what: str = "secret") -> str:
    """The first line of a small file holding a password or key (so it need not appear in argv)."""
    path = Path(path).expanduser()
    try:
        if path.stat().st_size > 4096:
            raise StudioError(f"the {what} file {path.name} is over 4 KB; it should hold one line")
        text = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise StudioError(f"cannot read the {what} file {path.name} ({exc.strerror})") from None
    if not text or not text[0].strip():
        raise StudioError(f"the {what} file {path.name} is empty")
    return text[0].strip()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, or a StudioError that says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"config file {path} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise StudioError(f"{path} is not valid YAML{where}: {problem}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StudioError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise StudioError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StudioError(f"override {item!r} sets inside {part!r}, which is a value")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` over ``base`` (new dict; nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (),
    saved: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from an optional YAML file, ``saved`` settings and ``key=value`` overrides (each wins
    over the one before)."""
    data = read_yaml(path) if path else {}
    data = merge(data, saved or {})
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data, where=str(path) if path else "overrides")


SETTINGS = "settings.yaml"  # under STUDIO_HOME: the choices saved from the UI (the Models tab's roles)


def read_settings(home: Path) -> dict[str, Any]:
    """The settings saved under ``home`` (empty when none were); a damaged file is named, not ignored."""
    path = home / SETTINGS
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise StudioError(f"{SETTINGS} in the studio home is not valid YAML: fix or delete it") from None
    if not isinstance(data, dict):
        raise StudioError(f"{SETTINGS} in the studio home must be a mapping of keys to values")
    return data


def save_settings(home: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the saved settings (written whole, then renamed: never half a file)."""
    data = merge(read_settings(home), updates)
    from_dict(StudioConfig, data, where=SETTINGS)  # refuse what would break every later start
    path = home / SETTINGS
    tmp = path.with_name(f".{SETTINGS}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the studio home's files are its user's
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, validated by pydantic (unknown keys, types, allowed values)."""
    if not isinstance(data, dict):
        raise StudioError(f"{where}: the config must be a mapping of keys to values")
    try:
        return _adapter(cls).validate_python(_lists(cls, data))
    except ValidationError as exc:
        raise StudioError(f"{where}: {_sentence(cls, exc.errors()[0])}") from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _lists(cls: type, data: Any) -> Any:
    """A scalar given for a list field becomes a one-item list (``generation.stop=</s>``), at any depth."""
    if not (dataclasses.is_dataclass(cls) and isinstance(data, dict)):
        return data
    hints, out = _hints(cls), dict(data)
    for key, value in data.items():
        hint = hints.get(key)
        target = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), hint)
        if dataclasses.is_dataclass(target):
            out[key] = _lists(target, value)
        elif _is_list(hint) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[key] = [value]
    return out


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in typing.get_args(hint))


_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "a string",
             "list": "a list", "dict": "a mapping", "dataclass": "a mapping"}


def _sentence(cls: type, error: dict) -> str:
    """One pydantic error as a sentence naming the key, the value and what is allowed."""
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
    key = ".".join(loc)
    kind, value = error["type"], error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        owner = _owner(cls, loc[:-1])
        known = ", ".join(".".join([*loc[:-1], f.name]) for f in dataclasses.fields(owner))
        return f"unknown key {key!r}; known keys: {known}"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{key!r} must be one of {allowed}, got {value!r}"
    if kind == "missing":
        return f"{key!r} is required"
    expected = next((v for k, v in _EXPECTED.items() if kind.startswith(k)), error["msg"].lower())
    return f"{key!r} must be {expected}, got {value!r}"


def _owner(cls: type, path: list[str]) -> type:
    """The dataclass that the dotted ``path`` names inside ``cls``."""
    for part in path:
        hint = _hints(cls).get(part)
        cls = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), cls)
    return cls


def describe_keys(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) of every field of a config class, nested ones expanded: for ``--help``."""
    rows = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls).get(f.name)
        if dataclasses.is_dataclass(hint):
            rows += describe_keys(hint, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        allowed = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
        helptext = f.metadata.get("help", "") or (" | ".join(map(str, allowed)) if allowed else "")
        rows.append((prefix + f.name, repr(default) if isinstance(default, str) else str(default), helptext))
    return rows


def keys_epilog(cls: type) -> str:
    """The config keys of ``cls`` with their defaults and help, as an argparse epilog."""
    rows = describe_keys(cls)
    width = max(len(k) for k, _, _ in rows)
    lines = [f"  {k:<{width}}  {d}" + (f"  ({h})" if h else "") for k, d, h in rows]
    return "config keys (key=value overrides; defaults shown):\n" + "\n".join(lines)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for YAML / JSON); deprecated keys left unset are not written."""
    data = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get("deprecated") and data.get(f.name) is None:
            data.pop(f.name)
    return data


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML next to a run's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path


def help_of(cls: type, key: str) -> str | None:
    """The help text of a config field (dotted ``key`` for nested ones), for a widget's ``info``."""
    *path, name = key.split(".")
    owner = _owner(cls, path)
    field_ = next((f for f in dataclasses.fields(owner) if f.name == name), None)
    if field_ is None:
        raise KeyError(f"{cls.__name__} has no key {key!r}")
    return field_.metadata.get("help") or None
