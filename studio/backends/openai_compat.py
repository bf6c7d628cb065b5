"""OpenAI-compatible endpoint backend: llama.cpp's server, vLLM, Ollama, LM Studio, ...

``OpenAIBackend(base_url="http://127.0.0.1:8000/v1")`` asks the server which models it serves
(``GET /models``) and uses the first one unless ``model`` names another. ``top_k`` and a JSON
schema go in the request body the way llama.cpp's server and vLLM read them.
"""

from __future__ import annotations

from collections.abc import Iterator

from studio.backends.base import ChatBackend, Chunk, GenerationSettings, Message
from studio.errors import StudioError


class OpenAIBackend(ChatBackend):
    """Chat through any server that speaks the OpenAI chat-completions API."""

    name = "openai"
    supports_json_schema = True

    def __init__(self, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 120.0, **_: object):
        if not base_url:
            raise StudioError("the openai backend needs --base-url, e.g. http://127.0.0.1:8000/v1")
        import openai

        self.base_url = base_url.rstrip("/")
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.base_url,
            # only the key the caller passes: the configured one goes to the configured URL only
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=0,
        )
        served = self._served_models()
        if model in (None, "", "smollm2-135m-instruct") and served:
            # the default local name means nothing to a remote server: take what it serves
            model = served[0]
        super().__init__(model or "default")

    def _served_models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list()]
        except self._openai.APIConnectionError:
            raise StudioError(
                f"cannot reach {self.base_url}; is the server running? check --base-url"
            ) from None
        except self._openai.NotFoundError:
            return []  # some servers do not list models; chatting may still work
        except self._openai.APIStatusError as exc:
            raise StudioError(f"{self.base_url} answered {exc.status_code}: {exc.message}") from None

    def describe(self) -> str:
        return f"{self.model_name} ({self.name} at {self.base_url})"

    def _chunks(self, messages: list[Message], settings: GenerationSettings) -> Iterator[Chunk]:
        # top_k is not an OpenAI field: llama.cpp's server and vLLM read it from the body
        kwargs = dict(model=self.model_name, messages=messages, stream=True, extra_body={"top_k": settings.top_k},
                      **settings.request_fields())
        try:
            stream = self.client.chat.completions.create(**kwargs)
            with stream:
                for part in stream:
                    if not part.choices:
                        continue
                    text = part.choices[0].delta.content or ""
                    if text:
                        yield Chunk(text)
        except self._openai.APIConnectionError:
            raise StudioError(f"lost the connection to {self.base_url}; is the server still up?") from None
        except self._openai.APIStatusError as exc:
            raise StudioError(f"{self.base_url} refused the request ({exc.status_code}): {exc.message}") from None
