"""Hugging Face transformers backend: a model folder, or a GGUF dequantized into one.

A GGUF is converted on first use (``from_pretrained(folder, gguf_file=name)``, ~20 s for the
bundled 135M model) and saved with ``save_pretrained`` under ``$STUDIO_HOME/cache/hf/`` so
later loads take a second or two. Generation streams through ``TextIteratorStreamer`` from a
worker thread; one lock serializes requests (the global torch seed is per process).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from studio.backends.base import ChatBackend, Chunk, GenerationSettings, Message, trim_at_stop
from studio.env import home_dir
from studio.errors import StudioError
from studio.registry import ModelSpec, resolve_model

log = logging.getLogger(__name__)


def converted_gguf_dir(spec: ModelSpec) -> Path:
    """Where the dequantized copy of a GGUF lives (keyed by path, size and mtime)."""
    stat = spec.path.stat()
    key = hashlib.sha256(f"{spec.path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return home_dir("cache", "hf") / f"{spec.name}-{key}"


def _drop_gguf_tag(model) -> None:
    """Let ``save_pretrained`` write a GGUF-loaded model whose weights are already dequantized.

    transformers keeps its GGUF quantizer attached (and refuses to save) even when every
    weight was unpacked to a float tensor on load; with nothing left packed, the tag is stale.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if not all(p.is_floating_point() for p in model.parameters()):
        raise StudioError("transformers kept this GGUF's weights packed; it cannot be cached as a folder")
    quantizer.remove_quantization_config(model)


def load_model_and_tokenizer(spec: ModelSpec):
    """(model, tokenizer) for an HF folder or a GGUF, converting and caching a GGUF once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.format == "hf":
        folder, extra = spec.path, {}
    else:
        cached = converted_gguf_dir(spec)
        if (cached / "config.json").is_file():
            folder, extra = cached, {}
        else:
            log.info("converting %s for transformers (once; cached in %s)", spec.path.name, cached)
            gguf = {"gguf_file": spec.path.name}
            try:
                model = AutoModelForCausalLM.from_pretrained(spec.folder, **gguf)
                tok = AutoTokenizer.from_pretrained(spec.folder, **gguf)
            except ImportError as exc:
                raise StudioError(f"reading GGUF files with transformers needs {exc}") from None
            _drop_gguf_tag(model)
            tmp = cached.with_name(cached.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            tmp.rename(cached)  # atomic: a half-written cache is never picked up
            return model, tok
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **extra)
        tok = AutoTokenizer.from_pretrained(folder, **extra)
    except (OSError, ValueError) as exc:
        raise StudioError(f"transformers could not load {folder}: {exc}") from None
    return model, tok


class HFBackend(ChatBackend):
    """Chat with a transformers causal LM: ``HFBackend("smollm2-135m-instruct")`` or a folder;
    ``adapter=RUN/adapter`` applies a LoRA adapter from a fine-tune run."""

    name = "hf"

    def __init__(self, model: str = "smollm2-135m-instruct", n_threads: int = 0, adapter: str | None = None,
                 **_: object):
        import torch

        spec = resolve_model(model)
        super().__init__(spec.name + (f"+{Path(adapter).parent.name}" if adapter else ""))
        if n_threads:
            torch.set_num_threads(n_threads)
        self.model, self.tokenizer = load_model_and_tokenizer(spec)
        if adapter:  # a PEFT LoRA adapter (a fine-tune run's adapter/ folder)
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise StudioError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise StudioError(f"{model} has no chat template; use a chat/instruct model")
        self._lock = threading.Lock()

    def _encode(self, messages: list[Message]):
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"], enc.get("attention_mask")

    def _chunks(self, messages: list[Message], settings: GenerationSettings) -> Iterator[Chunk]:
        import torch
        from transformers import TextIteratorStreamer

        with self._lock:
            input_ids, attention_mask = self._encode(messages)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            sample = settings.temperature > 0
            kwargs = dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=settings.max_tokens,
                do_sample=sample,
                streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
            if sample:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p,
                              top_k=settings.top_k or None)
            else:  # greedy: silence the model's default sampling parameters
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if settings.stop:
                kwargs.update(stop_strings=settings.stop, tokenizer=self.tokenizer)
            result: dict = {}
            stop_flag = threading.Event()

            def work() -> None:
                from transformers import StoppingCriteria, StoppingCriteriaList

                class Cancelled(StoppingCriteria):
                    def __call__(self, *args, **kw):
                        return stop_flag.is_set()

                try:
                    torch.manual_seed(settings.seed)
                    with torch.inference_mode():
                        out = self.model.generate(**kwargs,
                                                  stopping_criteria=StoppingCriteriaList([Cancelled()]))
                    result["tokens"] = int(out.shape[1] - input_ids.shape[1])
                except Exception as exc:  # surfaced to the caller below
                    result["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            text = ""
            try:
                for piece in streamer:
                    # stop strings end generation, but the streamer has already decoded them
                    new, hit = trim_at_stop(text + piece, settings.stop)
                    if len(new) > len(text):
                        yield Chunk(new[len(text):], tokens=0)
                    text = new
                    if hit:
                        break
            finally:
                stop_flag.set()
                worker.join()
            if "error" in result:
                raise StudioError(f"generation failed: {result['error']}")
            yield Chunk("", tokens=result.get("tokens", 0))
