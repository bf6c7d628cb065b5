"""llama.cpp backend (llama-cpp-python): the default, runs any GGUF on the CPU.

A llama.cpp context is not thread-safe, so the backend keeps a small pool of ``parallel``
contexts (default 1) and each request borrows one for the whole of its generation; other
requests wait their turn. The GGUF's own chat template is applied by llama-cpp-python.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator

from studio.backends.base import ChatBackend, Chunk, GenerationSettings, Message
from studio.errors import StudioError
from studio.registry import resolve_model

log = logging.getLogger(__name__)
_END = object()  # the generating thread has finished


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class TakeTurns:
    """A lock handed over first come, first served: the generations of ``parallel`` contexts take one
    token each in turn, so a request that arrives while others stream starts within a few tokens of
    each instead of after their whole answers (one llama.cpp decode runs at a time either way: the
    machine's cores are all in it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            mine = threading.Event()
            self._waiting.append(mine)
        mine.wait()  # the holder hands the lock over by setting it

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class LlamaCppBackend(ChatBackend):
    """Chat with a GGUF through llama-cpp-python.

    ``LlamaCppBackend("smollm2-135m-instruct")`` or ``LlamaCppBackend("/models/x.gguf",
    n_ctx=8192, parallel=2)``; then ``backend.stream(messages, settings)``.
    """

    name = "llamacpp"
    supports_json_schema = True

    def __init__(self, model: str = "smollm2-135m-instruct", n_ctx: int = 4096,
                 n_threads: int = 0, parallel: int = 1, reuse_prompt_cache: bool = False, **_: object):
        spec = resolve_model(model)
        if spec.format != "gguf":
            raise StudioError(
                f"the llamacpp backend needs a .gguf file and {model!r} is a {spec.format} folder; "
                "use --backend hf for Hugging Face folders"
            )
        if parallel < 1:
            raise StudioError(f"parallel must be at least 1, got {parallel}")
        super().__init__(spec.name)
        self.path = spec.path
        self.n_threads = n_threads or default_threads()
        # Reusing the KV cache of a shared prompt prefix changes how the prompt is evaluated, and
        # with it the logits slightly: the same request could then answer differently depending
        # on what ran before. Off by default so the same seed and settings give the same text.
        self.reuse_prompt_cache = reuse_prompt_cache
        self._pool: queue.Queue = queue.Queue()
        self._turns = TakeTurns()
        self._all = [self._load(n_ctx) for _ in range(parallel)]
        for llm in self._all:
            self._pool.put(llm)

    def _load(self, n_ctx: int):
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem
            raise StudioError(f"llama-cpp-python is not installed ({exc}); run `make run`") from None
        log.info("loading %s with llama.cpp (%d threads)", self.path, self.n_threads)
        try:
            return Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=self.n_threads,
                         n_threads_batch=self.n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise StudioError(f"llama.cpp could not load {self.path}: {exc}; is it a valid GGUF?") from None

    @property
    def llama(self):
        """One loaded ``llama_cpp.Llama`` (for tokenizing or inspection; do not generate on it)."""
        return self._all[0]

    def _chunks(self, messages: list[Message], settings: GenerationSettings) -> Iterator[Chunk]:
        """Generated pieces, read ahead by a thread of their own.

        The model does not wait for the reader: a web page's reader takes each piece only between
        redraws, and a reader that pulled the tokens itself would leave llama.cpp idle while a redraw
        is worked out. Measured with benchmarks/shared_load.py (8 accounts' plain chats on this
        2-core machine): see README's shared-studio table. Closing the stream stops the thread at
        the next token and frees the context.
        """
        pieces: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(messages, settings, pieces, stop),
                                  name="llamacpp-generate", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not _END:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            stop.set()
            worker.join()

    def _produce(self, messages: list[Message], settings: GenerationSettings, pieces: queue.SimpleQueue,
                 stop: threading.Event) -> None:
        llm = self._pool.get()
        try:
            if not self.reuse_prompt_cache:
                llm.reset()
            kwargs = dict(messages=messages, stream=True, top_k=settings.top_k, **settings.request_fields())
            parts = llm.create_chat_completion(**kwargs)
            try:
                while not stop.is_set():
                    with self._turns:  # one token (the first: the prompt) per turn
                        part = next(parts, None)
                    if part is None:
                        break
                    text = part["choices"][0]["delta"].get("content") or ""
                    if text:
                        pieces.put(Chunk(text))
            finally:
                parts.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            pieces.put(exc)
        finally:
            self._pool.put(llm)
            pieces.put(_END)

    def close(self) -> None:
        for llm in self._all:
            llm.close()
        self._all.clear()
