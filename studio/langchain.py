"""Any studio backend as a LangChain chat model.

>>> from langchain_core.prompts import ChatPromptTemplate
>>> from langchain_core.output_parsers import StrOutputParser
>>> llm = as_langchain(load_backend("llamacpp"), GenerationSettings(temperature=0))
>>> chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()
>>> chain.invoke({"q": "What is the capital of France?"})

``invoke``, ``stream``, ``batch`` and their async forms all work (LangChain runs the sync
methods in a thread pool for async). ``stop`` passed by LangChain is added to the settings'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from studio.backends.base import ChatBackend, GenerationSettings, Message

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_messages(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages -> the studio's ``{"role", "content"}`` dicts."""
    out = []
    for m in messages:
        role = _ROLES.get(m.type)
        if role is None:
            raise ValueError(f"studio chat models take system, human and ai messages, not {m.type}")
        out.append({"role": role, "content": m.text if hasattr(m, "text") else str(m.content)})
    return out


class StudioChatModel(BaseChatModel):
    """A LangChain ``BaseChatModel`` over a :class:`~studio.backends.base.ChatBackend`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: ChatBackend
    settings: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)

    @property
    def _llm_type(self) -> str:
        return f"studio-{self.backend.name}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.model_name, **dataclasses.asdict(self.settings)}

    def _settings(self, stop: list[str] | None, **kwargs: Any) -> GenerationSettings:
        changes = {k: v for k, v in kwargs.items() if k in GenerationSettings.__dataclass_fields__}
        settings = dataclasses.replace(self.settings, **changes)
        if stop:
            settings = dataclasses.replace(settings, stop=[*settings.stop, *stop])
        return settings

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self.backend.stream(to_messages(messages), self._settings(stop, **kwargs))
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={"model_name": self.backend.model_name,
                                   "completion_tokens": stream.completion_tokens},
            )
        )


def as_langchain(backend: ChatBackend, settings: GenerationSettings | None = None) -> StudioChatModel:
    """``backend`` as a LangChain ``BaseChatModel`` answering with ``settings``.

    The adapter depends on the backend interface, not the other way round, so the backends never
    import LangChain.
    """
    return StudioChatModel(backend=backend, settings=settings or GenerationSettings())
