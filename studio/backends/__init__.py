"""Chat backends behind one interface (see :mod:`studio.backends.base`).

``load_backend("llamacpp" | "hf" | "openai", model, **options)`` builds one; backend modules
are imported only when used, so ``studio --help`` never loads torch or llama.cpp.
"""

from __future__ import annotations

import importlib
import threading

from studio.backends.base import ChatBackend, ChatStream, Chunk, GenerationSettings, Message
from studio.errors import StudioError

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


def settings_from_config(gen, **changes) -> GenerationSettings:
    """GenerationSettings from a :class:`studio.config.GenerationConfig` plus changes."""
    values = dict(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                  max_tokens=gen.max_tokens, seed=gen.seed, stop=list(gen.stop))
    values.update({k: v for k, v in changes.items() if v is not None})
    return GenerationSettings(**values)


class BackendCache:
    """Loaded backends keyed by (backend, model, base_url, adapter), each loaded once.

    The web UI keeps one of these so switching models back and forth does not reload them.
    """

    def __init__(self, **defaults):
        self.defaults = defaults
        self._loaded: dict[tuple, ChatBackend] = {}
        self._lock = threading.Lock()

    def get(self, backend: str, model: str | None = None, base_url: str | None = None,
            adapter: str | None = None) -> ChatBackend:
        """``adapter`` (a fine-tune run's adapter folder) applies LoRA on the hf backend."""
        key = (backend, model or "", base_url or "", adapter or "")
        with self._lock:
            if key not in self._loaded:
                options = dict(self.defaults)
                if adapter and backend != "hf":
                    raise StudioError("a LoRA adapter needs the hf backend; pick hf in the Model settings")
                if adapter:
                    options = {"n_threads": options.get("n_threads"), "adapter": adapter}
                elif backend == "openai":
                    options["base_url"] = base_url or options.get("base_url")
                else:
                    options.pop("base_url", None)
                self._loaded[key] = load_backend(backend, model, **options)
            return self._loaded[key]

    def loaded(self) -> list[ChatBackend]:
        return list(self._loaded.values())
