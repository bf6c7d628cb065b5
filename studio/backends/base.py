"""The chat backend interface: a list of messages in, streamed text out.

>>> backend = load_backend("llamacpp", "smollm2-135m-instruct")
>>> stream = backend.stream([{"role": "user", "content": "Hi"}], GenerationSettings(seed=1))
>>> text = "".join(stream)          # pieces arrive as they are generated
>>> stream.completion_tokens, stream.seconds, stream.first_token_seconds

Every backend honours temperature, top_p, top_k, max_tokens, seed and stop; backends that can
constrain decoding to a JSON schema set ``supports_json_schema``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.limits import check_int, check_json_schema
from studio.limits import current as current_limits

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class GenerationSettings:
    """Sampling settings for one completion. ``temperature=0`` means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int = 512
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    json_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        lim = current_limits()
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 5):
            raise StudioError(f"temperature must be between 0 and 5, got {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise StudioError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (isinstance(self.top_k, int) and 0 <= self.top_k <= lim.top_k):
            raise StudioError(f"top_k must be between 0 (off) and {lim.top_k} (limits.top_k), got {self.top_k}")
        self.max_tokens = check_int("max_tokens", self.max_tokens, 1, lim.max_new_tokens, "max_new_tokens")
        self.seed = check_int("seed", self.seed, -(2**31), 2**32 - 1)
        if len(self.stop) > lim.stop_strings or any(not isinstance(x, str) or len(x) > 200 for x in self.stop):
            raise StudioError(f"give at most {lim.stop_strings} stop strings of at most 200 characters "
                              "(limits.stop_strings)")
        if self.json_schema is not None:
            check_json_schema(self.json_schema)

    def request_fields(self) -> dict[str, Any]:
        """The OpenAI chat-completions fields these settings map to (llama-cpp-python takes the same)."""
        fields: dict[str, Any] = dict(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                                      seed=self.seed, stop=self.stop or None)
        if self.json_schema is not None:
            fields["response_format"] = {"type": "json_object", "schema": self.json_schema}
        return fields


@dataclass
class Chunk:
    """A piece of generated text and how many tokens it took."""

    text: str
    tokens: int = 1


class ChatStream:
    """Iterates over generated text pieces and records what a benchmark or the CLI reports.

    After iteration: ``text`` (everything), ``completion_tokens``, ``first_token_seconds`` (time
    to the first non-empty piece) and ``seconds`` (wall time from the request).
    """

    def __init__(self, chunks: Iterator[Chunk]):
        self._chunks = chunks
        self._start = time.perf_counter()
        self.text = ""
        self.completion_tokens = 0
        self.first_token_seconds: float | None = None
        self.seconds = 0.0
        self.done = False

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks:
                self.completion_tokens += chunk.tokens
                if chunk.text:
                    if self.first_token_seconds is None:
                        self.first_token_seconds = time.perf_counter() - self._start
                    self.text += chunk.text
                    yield chunk.text
            self.done = True
        finally:
            self.seconds = time.perf_counter() - self._start

    def close(self) -> None:
        """Stop generating early (the backend frees its model for the next request)."""
        close = getattr(self._chunks, "close", None)
        if close:
            close()

    def consume(self) -> ChatStream:
        """Run to the end; returns self so ``backend.stream(...).consume().text`` reads well."""
        for _ in self:
            pass
        return self

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


class ChatBackend(ABC):
    """A chat model behind one interface. Subclasses implement :meth:`_chunks`."""

    name: str = "base"
    supports_json_schema: bool = False

    def __init__(self, model_name: str):
        self.model_name = model_name

    def stream(self, messages: list[Message], settings: GenerationSettings | None = None) -> ChatStream:
        """Start a completion; iterate the result for text pieces."""
        settings = settings or GenerationSettings()
        check_messages(messages)
        if settings.json_schema is not None and not self.supports_json_schema:
            raise StudioError(
                f"the {self.name} backend cannot constrain output to a JSON schema; "
                "use --backend llamacpp (or an endpoint that supports response_format)"
            )
        return ChatStream(self._chunks(messages, settings))

    def complete(self, messages: list[Message], settings: GenerationSettings | None = None) -> ChatStream:
        """A whole completion at once (the finished :class:`ChatStream`)."""
        return self.stream(messages, settings).consume()

    def describe(self) -> str:
        return f"{self.model_name} ({self.name})"

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to free
        """Free the model's memory."""

    @abstractmethod
    def _chunks(self, messages: list[Message], settings: GenerationSettings) -> Iterator[Chunk]:
        """Yield generated pieces; must release any lock in a ``finally`` (early close)."""


ROLES = {"system", "user", "assistant"}


def check_messages(messages: list[Message]) -> None:
    """Reject message lists no chat template can render, with a sentence that says why."""
    if not messages:
        raise StudioError("no messages to answer; send at least one user message")
    total = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise StudioError(f"message {i} needs a role of system, user or assistant")
        if not isinstance(msg.get("content"), str):
            raise StudioError(f"message {i} needs text content")
        total += len(msg["content"])
    most = current_limits().prompt_chars
    if total > most:
        raise StudioError(f"the conversation is {total:,} characters long; the limit is {most:,} "
                          "(limits.prompt_chars): start a new chat")


def trim_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, whether a stop string was found)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
