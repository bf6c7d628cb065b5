"""What a model file or folder is: its kind, header facts, size on disk and the RAM it needs loaded.

>>> describe_path(Path("model.gguf"))        # ("chat-gguf", {"architecture": "llama", "block_count": 30, ...})
>>> estimate_ram("chat-gguf", path, size, facts)
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from collections.abc import Callable
from pathlib import Path

from studio.errors import StudioError

# -- --------------------------------------------------------------------------------

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_header(path: Path, want: Callable[[str], bool]) -> dict:
    """The values of the keys ``want`` accepts in a GGUF file's header (format v2/v3), skipping the rest.

    The ``gguf`` package's ``GGUFReader`` builds a numpy array for every field, tokenizer vocabularies
    included: 4.3 s for the bundled 135M model's header here (and more for a 150k-token vocabulary), where
    this skips what it does not need in 0.07 s. Listing models reads the headers of all of them.
    """
    return _read_gguf(path, want, tensors=False)[0]


def gguf_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each tensor's name -> (shape in numpy order, outermost first; ggml type number), from the header alone."""
    return _read_gguf(path, lambda _key: False, tensors=True)[1]


def _read_gguf(path: Path, want: Callable[[str], bool], tensors: bool) -> tuple[dict, dict]:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] < 2:
            raise ValueError("not a GGUF v2+ file")
        n_tensors, count = struct.unpack_from("<QQ", m, 8)
        pos, out, shapes = 24, {}, {}

        def string(at: int) -> tuple[str, int]:
            n = struct.unpack_from("<Q", m, at)[0]
            return m[at + 8:at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        def value(kind: int, at: int, keep: bool):
            if kind in _SCALARS:
                fmt = "<" + _SCALARS[kind]
                return struct.unpack_from(fmt, m, at)[0], at + struct.calcsize(fmt)
            if kind == 8:
                return string(at)
            if kind == 9:
                inner, n = struct.unpack_from("<IQ", m, at)
                at += 12
                if inner in _SCALARS and not keep:
                    return None, at + n * struct.calcsize("<" + _SCALARS[inner])
                items = []
                for _ in range(n):
                    item, at = value(inner, at, keep)
                    if keep:
                        items.append(item)
                return items, at
            raise ValueError(f"unknown GGUF value type {kind}")

        for _ in range(count):
            key, pos = string(pos)
            kind = struct.unpack_from("<I", m, pos)[0]
            keep = want(key)
            got, pos = value(kind, pos + 4, keep)
            if keep:
                out[key] = got
        for _ in range(n_tensors if tensors else 0):
            name, pos = string(pos)
            n_dims = struct.unpack_from("<I", m, pos)[0]
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            kind = struct.unpack_from("<I", m, pos + 4 + 8 * n_dims)[0]
            pos += 4 + 8 * n_dims + 4 + 8
            shapes[name] = (tuple(reversed(dims)), kind)
    return out, shapes


def gguf_facts(path: Path) -> dict:
    """Architecture, sizes and licence from a GGUF file's header."""
    shape = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv", "context_length")
    general = ("architecture", "type", "license", "name", "size_label", "file_type")
    found = gguf_header(path, lambda key: key.startswith("general.") or key.partition(".")[2] in shape)
    arch = found.get("general.architecture", "")
    facts = {k: found.get(f"general.{k}") for k in general}
    facts["type"] = facts["type"] or "model"
    facts["licence"] = facts.pop("license") or ""
    facts.update({k: found.get(f"{arch}.{k}") for k in shape})
    return facts


def kv_bytes(facts: dict, n_ctx: int) -> int:
    """A llama.cpp f16 KV cache of ``n_ctx`` tokens: 2 (K and V) x layers x tokens x KV width x 2 bytes."""
    layers, width, heads = facts.get("block_count"), facts.get("embedding_length"), facts.get("attention.head_count")
    kv_heads = facts.get("attention.head_count_kv") or heads
    if not (layers and width and heads):
        return 0
    return 2 * int(layers) * n_ctx * (int(width) // int(heads)) * int(kv_heads) * 2


def estimate_ram(kind: str, path: Path, size: int, facts: dict, n_ctx: int = 4096) -> int:
    """Bytes a loaded model needs, roughly: a GGUF is mapped as it is plus one conversation's KV cache and
    ~10% for compute buffers (the bundled model: 98 MB file + 94 MB cache, estimated 233 MB; measured here,
    2026-11-29: a 4096-token llama_cpp.Llama after one reply adds 208 MB to the Python process);
    a transformers folder is loaded in float32 on CPU, so half-precision weights double."""
    if kind == "chat-gguf" or (kind == "embedding" and path.suffix == ".gguf"):
        return int(size * 1.1) + kv_bytes(facts, n_ctx) + 40 * 2**20
    if kind == "lora-adapter":
        return size
    dtype = str(facts.get("torch_dtype") or "float32")
    widen = 2 if dtype in ("float16", "bfloat16") else 1
    return int(size * widen * 1.2) + 100 * 2**20


def _folder_kind(folder: Path) -> str | None:
    if (folder / "adapter_config.json").is_file():
        return "lora-adapter"
    if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
        return "embedding"
    config = folder / "config.json"
    if config.is_file():
        try:
            archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, ValueError):
            return None
        if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
            return "chat-hf"
        return "embedding" if any(a.endswith("Model") for a in archs) else None
    return None


def folder_facts(folder: Path) -> dict:
    facts: dict = {}
    for name in ("config.json", "adapter_config.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            facts.update({k: data[k] for k in ("architectures", "torch_dtype", "model_type", "base_model_name_or_path",
                                               "r", "lora_alpha") if k in data})
    readme = folder / "README.md"
    if readme.is_file():  # a model card's front matter: "license: apache-2.0"
        head = readme.read_text(encoding="utf-8", errors="replace")[:4000]
        if head.startswith("---"):
            for line in head.split("---", 2)[1].splitlines():
                if line.strip().lower().startswith("license:"):
                    facts["licence"] = line.split(":", 1)[1].strip().strip("'\"")
    return facts


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def describe_path(path: Path) -> tuple[str, dict]:
    """(kind, facts) of a .gguf file or a model folder; StudioError when it is neither."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise StudioError(f"{path.name} is not a .gguf file; import a GGUF file or a Hugging Face model folder")
        try:
            facts = gguf_facts(path)
        except (ValueError, OSError, struct.error) as exc:
            raise StudioError(f"{path.name} is not a readable GGUF file ({type(exc).__name__}); "
                              "was the download complete?") from None
        if facts["type"] == "adapter":
            return "lora-adapter", facts
        encoder = facts.get("architecture") in ("bert", "nomic-bert", "jina-bert-v2")
        return ("embedding" if encoder else "chat-gguf"), facts
    if path.is_dir():
        kind = _folder_kind(path)
        if kind is None:
            raise StudioError(f"{path.name} is not a model folder the studio can use: it needs a config.json with "
                              "a causal LM or an encoder, a sentence-transformers model, or a PEFT adapter")
        return kind, folder_facts(path)
    raise StudioError("the model path does not exist")
