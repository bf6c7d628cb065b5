"""Chat backends behind one interface (see :mod:`studio.backends.base`).

``load_backend("llamacpp" | "hf" | "openai", model, **options)`` builds one; backend modules
are imported only when used, so ``studio --help`` never loads torch or llama.cpp.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlsplit

from studio.backends.base import ChatBackend, ChatStream, Chunk, GenerationSettings, Message
from studio.errors import StudioError
from studio.limits import current as current_limits
from studio.registry import resolve_model

BACKENDS = {
    "llamacpp": "studio.backends.llamacpp:LlamaCppBackend",
    "hf": "studio.backends.hf:HFBackend",
    "openai": "studio.backends.openai_compat:OpenAIBackend",
}

__all__ = ["BACKENDS", "BackendCache", "ChatBackend", "ChatStream", "Chunk", "GenerationSettings",
           "Message", "load_backend"]


def load_backend(backend: str, model: str | None = None, **options) -> ChatBackend:
    """Build a backend by name. Options: base_url, api_key, n_ctx, n_threads, parallel, timeout."""
    if backend not in BACKENDS:
        raise StudioError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[backend].split(":")
    kwargs = {k: v for k, v in options.items() if v is not None}
    if model:
        kwargs["model"] = model
    return getattr(importlib.import_module(module), cls)(**kwargs)


def _written(adapter: str | None) -> int:
    """When the adapter's weights were last written (an adapter exported again after more training is another
    model to load, at the same path)."""
    if not adapter:
        return 0
    path = Path(adapter)
    weights = path / "adapter_model.safetensors" if path.is_dir() else path
    return weights.stat().st_mtime_ns if weights.exists() else 0


def settings_from_config(gen, **changes) -> GenerationSettings:
    """GenerationSettings from a :class:`studio.config.GenerationConfig` plus changes."""
    values = dict(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                  max_tokens=gen.max_tokens, seed=gen.seed, stop=list(gen.stop))
    values.update({k: v for k, v in changes.items() if v is not None})
    return GenerationSettings(**values)


class BackendCache:
    """Loaded backends, each loaded once and shared, at most ``limits.loaded_models`` of them.

    The key is what a backend actually loads: (backend, the model's resolved path, the endpoint,
    the adapter's resolved path), so a model reached by two spellings of its path is loaded once.
    When a new model would pass the bound, the least recently used one is dropped (its memory is
    freed once the requests still streaming from it end).

    Server-side rules for values that come from the web UI:
    - ``roots`` (a :class:`studio.paths.Roots`): model files and adapters must lie inside them;
    - ``allowed_urls``: the endpoints a user may point the openai backend at (``None``: any
      http(s) URL, for a studio only this machine's user reaches); the configured ``base_url`` is
      always allowed;
    - the configured ``api_key`` is sent to the configured ``base_url`` only: a URL typed by a
      user gets no key.
    """

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, roots=None,
                 allowed_urls: list[str] | None = None, max_loaded: int | None = None, **defaults):
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key = api_key
        self.roots = roots
        self.allowed_urls = None if allowed_urls is None else [u.rstrip("/") for u in allowed_urls if u]
        self.max_loaded = max_loaded
        self.defaults = defaults
        self._loaded: OrderedDict[tuple, ChatBackend] = OrderedDict()
        self._lock = threading.Lock()

    def check_url(self, url: str | None) -> str:
        """The endpoint for the openai backend, if this studio lets a user point at it."""
        url = (url or self.base_url or "").strip().rstrip("/")
        if not url:
            raise StudioError("the openai backend needs a base URL, e.g. http://127.0.0.1:8000/v1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise StudioError("the base URL must look like http(s)://HOST:PORT/v1, without a user name or password")
        if url == self.base_url or self.allowed_urls is None:
            return url
        if any(url == a or url.startswith(a + "/") for a in self.allowed_urls):
            return url
        raise StudioError("this studio is shared, so the openai backend may only use the endpoints its operator "
                          "listed (chat.base_url, security.allowed_base_urls)")

    def get(self, backend: str, model: str | None = None, base_url: str | None = None,
            adapter: str | None = None) -> ChatBackend:
        """``adapter`` applies a fine-tune's LoRA: its PEFT folder on hf, its exported ``adapter.gguf`` on llamacpp
        (``finetune.adapters.Adapter.serving`` says which)."""
        if backend not in BACKENDS:
            raise StudioError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if adapter and backend == "openai":
            raise StudioError("a LoRA adapter runs on the llamacpp or hf backend; pick one in the Model settings")
        options = dict(self.defaults)
        if backend == "openai":
            url = self.check_url(base_url)
            key = (backend, model or "", url, "", 0)
            options.update(base_url=url, api_key=self.api_key if url == self.base_url else None)
        else:
            model = model or "smollm2-135m-instruct"
            spec = resolve_model(model, roots=self.roots)
            if adapter:
                adapter = str(self.roots.resolve(adapter, "adapter") if self.roots else Path(adapter).resolve())
                if (backend == "llamacpp") != adapter.endswith(".gguf"):
                    raise StudioError("the llamacpp backend applies an adapter exported to GGUF, the hf backend "
                                      "a PEFT adapter folder")
                options = options if backend == "llamacpp" else {"n_threads": options.get("n_threads")}
                options["adapter"] = adapter
            model = model if spec.name == model else str(spec.path)  # a bundled or installed name, or what was checked
            key = (backend, str(spec.path), "", adapter or "", _written(adapter))
            options.pop("base_url", None)
            options.pop("timeout", None)
        with self._lock:
            if key in self._loaded and getattr(self._loaded[key], "broken", False):
                del self._loaded[key]  # it failed while decoding (the log says why): load it afresh
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loaded = load_backend(backend, model, **options)
            self._loaded[key] = loaded
            most = self.max_loaded or current_limits().loaded_models
            while len(self._loaded) > most:
                self._loaded.popitem(last=False)  # freed by refcount once its running streams end
            return loaded

    def loaded(self) -> list[ChatBackend]:
        with self._lock:
            return list(self._loaded.values())
