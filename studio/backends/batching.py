"""Continuous batching for llama.cpp: one model, one context, up to ``slots`` conversations decoded together.

Every step feeds llama.cpp one batch holding the next token of each conversation that is generating
and a chunk of the prompt of each that has just arrived, then samples each conversation's next token
from its own row of the logits with its own sampler chain. A request that arrives while others stream
joins at the next step instead of waiting for their whole answers (the 95th-percentile wait for the
first text with 8 people chatting: see README's shared-studio table), and one step for eight rows
costs less than eight steps of one: 52 ms against 8 x 10 ms for the bundled model on this 2-core
machine, with nothing else running. This is what llama.cpp's own C++ server does; llama-cpp-python's
server (the anchor of benchmarks/shared_load.py) serves one request at a time.

Sampling follows llama-cpp-python's ``create_chat_completion`` exactly (the same chain: grammar,
top-k, typical, top-p, min-p 0.05, temperature, seeded draw; greedy at temperature 0), so one request
alone gets the same text as through ``Llama.create_chat_completion``. Decoded beside others, a greedy
answer can differ in a late token now and then: a batch of several rows takes other matrix kernels
than a batch of one, and the logits differ in their last bits (llama.cpp documents the same of its
server).
"""

from __future__ import annotations

import codecs
import ctypes
import heapq
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaSampler
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from studio.backends.base import trim_at_stop
from studio.errors import StudioError

log = logging.getLogger(__name__)

END = object()  # put on a request's queue when it has finished


def _holding_the_gil(name: str):
    """llama.cpp's C function ``name``, called without releasing Python's GIL.

    llama-cpp-python binds everything through ``ctypes.CDLL``, which lets go of the GIL around each call
    and takes it back after. For a call of microseconds, taking it back is what costs: while Gradio's
    threads are busy, each return can wait for one of them to reach its switch interval (5 ms). The
    decoding thread would make about 25 such calls a step (sampling and detokenizing each row, 8 rows);
    through these it makes one (llama_decode, which is long and must let the page's threads run
    meanwhile). The effect on the shared-load benchmark was within its run-to-run noise.
    """
    bound = getattr(llama_cpp.llama_cpp, name)
    fn = getattr(_PYDLL, name)
    fn.argtypes, fn.restype = bound.argtypes, bound.restype
    return fn


_PYDLL = ctypes.PyDLL(llama_cpp.llama_cpp._lib._name)
_sample = _holding_the_gil("llama_sampler_sample")
_token_to_piece = _holding_the_gil("llama_token_to_piece")
_is_eog = _holding_the_gil("llama_vocab_is_eog")
MIN_P = 0.05  # llama-cpp-python's create_chat_completion default
TYPICAL_P = 1.0
# With more conversations than this decoding, llama.cpp gets one thread fewer than the cores: the page's
# threads stream that many replies, and a llama.cpp thread they push off a core stalls the other at
# every step (ggml's threads wait for each other between operations). Measured on this 2-core machine,
# 8 rows a step beside 4 busy Python threads: 168 ms a step with 2 threads, 107 ms with 1 (52 and
# 85 ms with nothing else running); and benchmarks/shared_load.py's 8 users: see README.
BUSY = 2


@dataclass
class Request:
    """One conversation in the batch: its prompt, sampler, limits and the queue its text goes to."""

    prompt: list[int]
    sampler: LlamaSampler
    max_tokens: int
    stop: list[str]
    sample: object  # llama_sampler_sample, holding the GIL or not (see BatchedDecoder.submit)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    seq: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    last: int = -1  # the token sampled last, fed at the next step
    generated: int = 0
    unsent_tokens: int = 0
    text: str = ""  # decoded text not yet sent: held back while it may be the start of a stop string
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def cancel(self) -> None:
        self.cancelled.set()


class _DecodingThread:
    """The one thread that decodes for every :class:`BatchedDecoder` of the process, a step of each in turn.

    ggml spreads a decode over the cores with OpenMP, whose worker team belongs to the thread that calls.
    With a thread per loaded model (Chat's model and a fine-tuned adapter, or the Prompt Lab's model beside
    Chat's), two teams made more OpenMP threads than cores; libgomp then stops letting idle workers spin, and
    every step waited for sleeping workers to wake. Measured here (greedy record answers, one request at a
    time): one model alone decoded 99-107 tokens/s; once a second model had decoded too, both ran at 30-41.
    Run from one thread, both ran at 93-101. (``OMP_WAIT_POLICY=active`` also recovers the speed, but its
    workers then spin on the cores whenever the studio is idle.) Models loaded together take turns step by
    step, as two teams sharing the two cores would have, without the waits.
    """

    def __init__(self):
        self.cv = threading.Condition()
        self.decoders: list[BatchedDecoder] = []
        self.thread: threading.Thread | None = None

    def add(self, decoder: BatchedDecoder) -> None:
        with self.cv:
            self.decoders.append(decoder)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._round()
            except BaseException:  # noqa: BLE001 - this thread serves every model: it must not end
                log.exception("the llama.cpp decoding thread failed")
                time.sleep(0.1)

    def _round(self) -> None:
        """A step of each decoder with work (its own frame: no decoder stays referenced while the thread waits,
        so an unloaded model is freed). A decoder that fails is let go; the others go on."""
        with self.cv:
            while not (busy := [d for d in self.decoders if d.has_work()]):
                self.cv.wait()
        for decoder in busy:
            try:
                decoder.turn()
            except BaseException:  # noqa: BLE001 - one model's failure ends its own requests only
                log.exception("llama.cpp failed while decoding")
                decoder.let_go("the model failed while answering (the server's log says why); try again")


def on_decoding_thread() -> bool:
    """Whether this is the thread that decodes for every model (which must never wait on itself)."""
    return threading.current_thread() is _THREAD.thread


_THREAD = _DecodingThread()


class BatchedDecoder:
    """Decodes up to ``slots`` requests together, on the process's decoding thread (see the module docstring
    and :class:`_DecodingThread`).

    ``submit(messages, ...)`` returns a :class:`Request` whose ``out`` queue receives text pieces as
    ``(text, tokens)`` tuples, an exception if generation failed, and :data:`END`.
    """

    def __init__(self, llm: llama_cpp.Llama, slots: int, n_ctx: int, n_threads: int, n_batch: int = 512,
                 lora=None):
        """``lora``: a LoRA adapter loaded on ``llm``'s model (``llama_adapter_lora_init``) applied to every row."""
        self.llm = llm
        self.model = llm._model
        self.vocab = self.model.vocab
        self.slots = slots
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)  # the same settings
        params.n_ctx = n_ctx * slots  # each sequence gets n_ctx of its own (the cache is not unified)
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = n_threads
        try:
            self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        except ValueError as exc:
            raise StudioError(f"llama.cpp could not make a context for {slots} conversations of {n_ctx} "
                              f"tokens ({exc}); lower chat.parallel") from None
        if lora is not None and llama_cpp.llama_set_adapters_lora(
                self.ctx.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora), 1, (ctypes.c_float * 1)(1.0)):
            self.ctx.close()
            raise StudioError("llama.cpp could not apply the LoRA adapter to this model")
        self.n_ctx_seq = llama_cpp.llama_n_ctx(self.ctx.ctx) // slots
        self.n_threads = self._threads_now = n_threads
        self.busy_threads = max(1, n_threads - 1)
        self.n_batch = n_batch
        self.batch = LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._formatter = self._chat_formatter(llm)
        self._pieces: dict[int, bytes] = {}
        self._cv = _THREAD.cv  # one lock and condition for the decoders and the thread that serves them
        self._waiting: deque[Request] = deque()
        self._active: list[Request] = []
        # The lowest free sequence id is handed out, and a step's rows go in id order: with a cache per
        # sequence, llama.cpp splits a batch wherever the ids stop increasing, and each part is a pass
        # over the whole model.
        self._free = list(range(slots))  # a heap
        self._closing = False
        self._closed = False  # the decoding thread has let go of this decoder
        self._ended = "the model was unloaded while answering"
        _THREAD.add(self)

    @staticmethod
    def _chat_formatter(llm: llama_cpp.Llama) -> llama_chat_format.Jinja2ChatFormatter:
        """The GGUF's own chat template, as llama-cpp-python applies it."""
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise StudioError("this GGUF has no chat template (tokenizer.chat_template), so the studio cannot "
                              "tell how to lay out a conversation for it; use an instruct model's GGUF")
        eos, bos = llm.token_eos(), llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, messages: list[dict], *, temperature: float, top_p: float, top_k: int, max_tokens: int,
               seed: int, stop: list[str] | None = None, json_schema: dict | None = None) -> Request:
        result = self._formatter(messages=messages)
        prompt = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        if len(prompt) >= self.n_ctx_seq:
            raise StudioError(f"the conversation is {len(prompt)} tokens long and the model's context holds "
                              f"{self.n_ctx_seq} (chat.n_ctx): start a new chat or shorten the documents")
        stops = list(stop or [])
        if result.stop:
            stops += [result.stop] if isinstance(result.stop, str) else list(result.stop)
        grammar = None
        if json_schema is not None:
            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(json_schema), verbose=False)
            except Exception:  # noqa: BLE001 - llama-cpp-python falls back to any JSON the same way
                grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        # A grammar checks every token of the vocabulary, and top-k 0 sorts all of it: those samplers can
        # take milliseconds a row, so they let the page's threads run meanwhile.
        slow = grammar is not None or (top_k == 0 and temperature != 0)
        req = Request(prompt=prompt, sampler=self._sampler(temperature, top_p, top_k, seed, grammar),
                      max_tokens=min(max_tokens, self.n_ctx_seq - len(prompt)), stop=[s for s in stops if s],
                      sample=llama_cpp.llama_sampler_sample if slow else _sample)
        with self._cv:
            if self._closing:
                raise StudioError("the model is being unloaded; try again")
            self._waiting.append(req)
            self._cv.notify_all()
        return req

    def _sampler(self, temperature: float, top_p: float, top_k: int, seed: int,
                 grammar: LlamaGrammar | None) -> LlamaSampler:
        """The chain llama-cpp-python's Llama._init_sampler builds for create_chat_completion."""
        sampler = LlamaSampler()
        if grammar is not None:
            sampler.add_grammar(self.model, grammar)
        if temperature == 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(top_k)
            sampler.add_typical(TYPICAL_P, 1)
            sampler.add_top_p(top_p, 1)
            sampler.add_min_p(MIN_P, 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed & 0xFFFFFFFF)
        return sampler

    # -- the decoding thread ----------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """Closed, closing, or let go after a failure: no request is taken any more."""
        return self._closing

    def has_work(self) -> bool:
        """Requests to serve, or a close to finish (called under the shared lock)."""
        return not self._closed and bool(self._closing or self._waiting or self._active)

    def turn(self) -> None:
        """On the decoding thread: admit waiting requests into free slots, end cancelled ones, decode one step;
        or, once closing, end every request left and let go of this decoder."""
        with self._cv:
            if self._closed:
                return
            closing = self._closing
            while not closing and self._waiting and self._free:
                req = self._waiting.popleft()
                req.seq = heapq.heappop(self._free)
                self._active.append(req)
        if closing:
            self.let_go(self._ended)
            return
        for req in [r for r in self._active if r.cancelled.is_set()]:
            self._finish(req, None)
        if self._active:
            self._step()

    def let_go(self, why: str) -> None:
        """End every request left with ``why`` (each reader gets the error and END), and leave the decoding
        thread's list: nothing decodes on this decoder again."""
        with self._cv:
            self._closing = True
            left = self._active + list(self._waiting)
            self._active, self._waiting = [], deque()
        for req in left:
            try:
                self._finish(req, StudioError(why))
            except BaseException:  # noqa: BLE001 - its reader still gets the error and END
                req.out.put(StudioError(why))
                req.out.put(END)
        with self._cv:
            self._closed = True
            if self in _THREAD.decoders:
                _THREAD.decoders.remove(self)
            self._cv.notify_all()

    def _step(self) -> None:
        """One llama_decode over every active request; then each samples its next token."""
        b = self.batch.batch
        n = 0
        rows: list[tuple[Request, int]] = []
        # what each request feeds: one token each for those generating (the one sampled at the last step),
        # then as much of each new prompt as the batch holds, oldest first
        feed = {id(r): 1 for r in self._active if r.fed == len(r.prompt)}
        room = self.n_batch - len(feed)
        for req in self._active:
            if req.fed < len(req.prompt) and room > 0:
                feed[id(req)] = take = min(len(req.prompt) - req.fed, room)
                room -= take
        for req in sorted(self._active, key=lambda r: r.seq):  # in sequence-id order (see __init__)
            take = feed.get(id(req), 0)
            if not take:
                continue
            if req.fed == len(req.prompt):
                self._add(b, n, req.last, len(req.prompt) + req.generated - 1, req.seq, True)
                rows.append((req, n))
                n += 1
                continue
            for i in range(take):
                pos = req.fed + i
                self._add(b, n, req.prompt[pos], pos, req.seq, pos == len(req.prompt) - 1)
                n += 1
            req.fed += take
            if req.fed == len(req.prompt):
                rows.append((req, n - 1))
        b.n_tokens = n
        threads = self.busy_threads if len(self._active) > BUSY else self.n_threads
        if threads != self._threads_now:
            llama_cpp.llama_set_n_threads(self.ctx.ctx, threads, threads)
            self._threads_now = threads
        code = llama_cpp.llama_decode(self.ctx.ctx, b)
        if code != 0:
            for req in list(self._active):
                self._finish(req, StudioError(f"llama.cpp could not decode (code {code}); try again with a "
                                              "shorter conversation"))
            return
        for req, row in rows:
            token = req.sample(req.sampler.sampler, self.ctx.ctx, row)
            req.generated += 1
            req.last = token
            if _is_eog(self.vocab, token):
                self._finish(req, None)
                continue
            self._emit(req, token)
            if req.generated >= req.max_tokens and req.seq >= 0:
                self._finish(req, None)

    @staticmethod
    def _add(b, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _piece(self, token: int) -> bytes:
        """The token's bytes (special tokens render as nothing), remembered per token."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(256)
            size = _token_to_piece(self.vocab, token, buf, 256, 0, False)
            if size < 0:  # a longer piece: -size bytes
                buf = ctypes.create_string_buffer(-size)
                size = _token_to_piece(self.vocab, token, buf, -size, 0, False)
            piece = self._pieces[token] = buf.raw[:max(size, 0)]
        return piece

    def _emit(self, req: Request, token: int) -> None:
        """Decode the token's bytes and send what can no longer turn into a stop string."""
        req.text += req.decoder.decode(self._piece(token))
        req.unsent_tokens += 1
        req.text, stopped = trim_at_stop(req.text, req.stop)
        if stopped:
            self._finish(req, None)
            return
        hold = max((k for s in req.stop for k in range(min(len(s) - 1, len(req.text)), 0, -1)
                    if req.text.endswith(s[:k])), default=0)
        ready = req.text[:len(req.text) - hold]
        if ready:
            req.out.put((ready, req.unsent_tokens))
            req.text = req.text[len(ready):]
            req.unsent_tokens = 0

    def _finish(self, req: Request, error: BaseException | None) -> None:
        """Send what is left (or the error) and END, and free the request's sequence."""
        if error is not None:
            req.out.put(error)
        elif req.text or req.unsent_tokens:
            req.out.put((req.text, req.unsent_tokens))
        req.text, req.unsent_tokens = "", 0
        if req.seq >= 0:  # freed before END, so a reader that sends again at once finds the slot free
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, req.seq, -1, -1)
            heapq.heappush(self._free, req.seq)
            req.seq = -1
        if req in self._active:
            self._active.remove(req)
        req.sampler.close()
        req.out.put(END)

    def close(self) -> None:
        """End the requests left (each reader gets an error and END), then free the context. Not on the
        decoding thread, which may be in a step of this very context (see LlamaCppBackend.close)."""
        if on_decoding_thread():
            raise RuntimeError("a decoder cannot be closed on the decoding thread; close it from another thread")
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            while not self._closed and _THREAD.thread is not None and _THREAD.thread.is_alive():
                self._cv.wait(timeout=1.0)
        if not self._closed:  # no decoding thread is left to do it
            self.let_go(self._ended)
        self.batch.close()
        self.ctx.close()
