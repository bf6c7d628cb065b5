"""llama.cpp backend (llama-cpp-python): the default, runs any GGUF on the CPU.

One model and one llama.cpp context serve up to ``parallel`` conversations at once by continuous
batching (:mod:`studio.backends.batching`): each step decodes the next token of every conversation
together, and a new request joins at the next step. Requests beyond ``parallel`` wait for a free
slot. The GGUF's own chat template is applied as llama-cpp-python applies it. A LoRA adapter in GGUF form
(``studio finetune export RUN --format gguf``) is applied at run time on top of the quantized model.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from studio.backends.base import ChatBackend, Chunk, GenerationSettings, Message
from studio.backends.batching import END, BatchedDecoder, on_decoding_thread
from studio.errors import StudioError
from studio.registry import resolve_model

log = logging.getLogger(__name__)
AUX_CTX = 1024  # tokens of the Llama object's own context (tokenizing, and a raw baseline in benchmarks)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LlamaCppBackend(ChatBackend):
    """Chat with a GGUF through llama-cpp-python.

    ``LlamaCppBackend("smollm2-135m-instruct")`` or ``LlamaCppBackend("/models/x.gguf",
    n_ctx=8192, parallel=2)``; then ``backend.stream(messages, settings)``. ``adapter=RUN/adapter.gguf``
    applies a LoRA adapter written by ``studio finetune export RUN --format gguf``.
    """

    name = "llamacpp"
    supports_json_schema = True

    def __init__(self, model: str = "smollm2-135m-instruct", n_ctx: int = 4096,
                 n_threads: int = 0, parallel: int = 1, adapter: str | None = None, **_: object):
        spec = resolve_model(model)
        if spec.format != "gguf":
            raise StudioError(
                f"the llamacpp backend needs a .gguf file and {model!r} is a {spec.format} folder; "
                "use --backend hf for Hugging Face folders"
            )
        if parallel < 1:
            raise StudioError(f"parallel must be at least 1, got {parallel}")
        super().__init__(spec.name + (f"+{Path(adapter).parent.name}" if adapter else ""))
        self.path = spec.path
        self.n_threads = n_threads or default_threads()
        # The Llama object tokenizes and holds the model; the decoder's context (n_ctx for each of the
        # ``parallel`` conversations) is the one that answers, so its own context stays small.
        self._llama = self._load(min(n_ctx, AUX_CTX))
        try:
            lora = self._load_adapter(adapter) if adapter else None
            self._decoder = BatchedDecoder(self._llama, parallel, n_ctx, self.n_threads, lora=lora)
        except BaseException:
            self._llama.close()
            raise

    def _load(self, n_ctx: int):
        log.info("loading %s with llama.cpp (%d threads)", self.path, self.n_threads)
        try:
            return Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=self.n_threads,
                         n_threads_batch=self.n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise StudioError(f"llama.cpp could not load {self.path}: {exc}; is it a valid GGUF?") from None

    def _load_adapter(self, adapter: str):
        """The GGUF LoRA adapter loaded on the model (llama.cpp frees it with the model). llama-cpp-python's own
        ``lora_path`` would also turn off mmap, so a plain and an adapted backend would not share the file's pages."""
        lora = llama_cpp.llama_adapter_lora_init(self._llama._model.model, str(adapter).encode())
        if not lora:
            raise StudioError(f"llama.cpp could not load the LoRA adapter {Path(adapter).parent.name}/"
                              f"{Path(adapter).name} on {self.path.name}; was it exported for this model?")
        return lora

    @property
    def broken(self) -> bool:
        """Unloaded, or failed while decoding: nothing will answer through this backend again."""
        decoder = self._decoder
        return decoder is None or decoder.closing

    @property
    def llama(self):
        """The loaded ``llama_cpp.Llama`` (tokenizer, metadata; its own context is not the one that serves)."""
        return self._llama

    def _chunks(self, messages: list[Message], settings: GenerationSettings) -> Iterator[Chunk]:
        """Generated pieces from the batched decoder; closing the stream ends the request at the next step."""
        decoder = self._decoder
        if decoder is None:
            raise StudioError("this model was unloaded; send the message again")
        req = decoder.submit(messages, temperature=settings.temperature, top_p=settings.top_p,
                                   top_k=settings.top_k, max_tokens=settings.max_tokens, seed=settings.seed,
                                   stop=settings.stop, json_schema=settings.json_schema)
        try:
            while (piece := req.out.get()) is not END:
                if isinstance(piece, BaseException):
                    raise piece
                yield Chunk(*piece)
        finally:
            req.cancel()

    def close(self) -> None:
        if on_decoding_thread():
            # the garbage collector can drop a backend on the decoding thread, even in the middle of a step of
            # its own context: freeing it there would pull the context from under that step
            threading.Thread(target=self.close, name="llamacpp-unload", daemon=True).start()
            return
        decoder, self._decoder = getattr(self, "_decoder", None), None
        if decoder is not None:
            decoder.close()
            self._llama.close()

    def __del__(self) -> None:
        # BackendCache drops a model it unloads and lets the last stream's end free it: the decoding
        # thread (which holds the decoder, not the backend) must then be stopped, or it keeps the model
        # and its cache in memory for good.
        if not sys.is_finalizing():
            self.close()
