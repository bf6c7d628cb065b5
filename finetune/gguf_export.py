"""Fine-tuned adapters for llama.cpp: a PEFT LoRA adapter written as a GGUF LoRA adapter, which llama.cpp
applies at run time on the quantized base model, or folded into one merged GGUF model.

>>> export_gguf(run_dir)              # RUN/adapter.gguf: `studio chat --adapter RUN` then runs on llama.cpp
>>> merge_gguf(run_dir, "q8_0")       # RUN/merged-q8_0.gguf: one file, no adapter, any llama.cpp runtime

The GGUF layout follows llama.cpp's own ``convert_lora_to_gguf.py`` (which needs the llama.cpp source tree
and the base model's Hugging Face config, neither of which a studio has): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per target weight ``blk.N.attn_q.weight.lora_a`` (rank x
inputs) and ``.lora_b`` (outputs x rank), named by the ``gguf`` package's tensor map. llama.cpp scales an
adapter by alpha / rank as PEFT does; rsLoRA's alpha / sqrt(rank) is folded into ``lora_b``.

llama.cpp stores a llama model's query and key rows interleaved per head (its converter permutes them and
transformers' GGUF loader undoes it, so the adapter was trained on the un-permuted rows): the same row
permutation is applied to those adapters' ``lora_b``. Only the llama architecture (SmolLM2, Llama, Mistral
and their kin) is exported: it is the one this could be checked on here; others are refused by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
from safetensors.numpy import load_file

from finetune.adapters import GGUF_ADAPTER, GGUF_QUANTS, Adapter, adapter_of
from studio.errors import StudioError
from studio.modelfacts import gguf_facts, gguf_header, gguf_tensors
from studio.registry import ModelSpec, resolve_model

SUPPORTED_ARCHS = ("llama",)
# a merged GGUF's weights -> llama.cpp's file type to quantize to (None: the f16 file is the result)
QUANTS = dict(zip(GGUF_QUANTS, (None, llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
                                llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
                                llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1), strict=True))
Progress = Callable[[float, str], None]
STALE_SECONDS = 3600  # a temp file unchanged this long belongs to an export that was killed


@dataclass
class LoraWeights:
    """A PEFT adapter's matrices, named and laid out as llama.cpp wants them for one base GGUF."""

    adapter: Adapter
    base: ModelSpec
    arch: str
    alpha: float
    tensors: list[tuple[str, np.ndarray, np.ndarray]]  # (base tensor name, lora_a, lora_b)

    def delta(self, name: str) -> np.ndarray | None:
        """What the adapter adds to the base tensor ``name`` (outputs x inputs): alpha / r x B A; or None."""
        for target, a, b in self.tensors:
            if target == name:
                return (self.alpha / a.shape[0]) * (b @ a)
        return None

    def targets(self) -> set[str]:
        return {name for name, _, _ in self.tensors}


def lora_weights(run_or_adapter: str | Path) -> LoraWeights:
    """The run's adapter checked against its base GGUF; refused with what to do where llama.cpp cannot apply it."""
    a = adapter_of(run_or_adapter)
    if a.task != "generation":
        raise StudioError(f"{a.name} is a {a.task} adapter: its classification head has no tensor in a llama.cpp "
                          "model, so it cannot run there; use it on the hf backend")
    cfg = json.loads((a.path / "adapter_config.json").read_text())
    refusals = [
        (cfg.get("peft_type", "LORA") != "LORA", f"it is a {cfg.get('peft_type')} adapter, not LoRA"),
        (cfg.get("use_dora"), "it uses DoRA, whose magnitude vectors llama.cpp does not apply"),
        (cfg.get("modules_to_save"), f"it trains whole modules too ({', '.join(cfg.get('modules_to_save') or [])})"),
        (cfg.get("bias", "none") != "none" or cfg.get("lora_bias"), "it trains biases"),
        (cfg.get("trainable_token_indices"), "it trains token embeddings"),
        (cfg.get("alpha_pattern"), "it sets alpha per module (llama.cpp has one alpha per adapter)"),
        (cfg.get("fan_in_fan_out"), "its weights are stored transposed (fan_in_fan_out)"),
    ]
    for refused, why in refusals:
        if refused:
            raise StudioError(f"{a.name} cannot be exported to GGUF: {why}; use it on the hf backend")
    base = resolve_model(a.base_model)
    if base.format != "gguf":
        raise StudioError(f"{a.name} was trained on the model folder {a.base_model}; llama.cpp applies adapters to "
                          "GGUF models only, so use it on the hf backend")
    facts = gguf_facts(base.path)
    arch = facts["architecture"]
    if arch not in SUPPORTED_ARCHS:
        raise StudioError(f"{a.name}'s base model is a {arch} model; GGUF export handles {', '.join(SUPPORTED_ARCHS)} "
                          "models only, so use it on the hf backend")
    shapes = gguf_tensors(base.path)
    names = gguf.get_tensor_name_map(_arch_enum(arch), int(facts["block_count"]))
    heads = int(facts["attention.head_count"])
    kv_heads = int(facts["attention.head_count_kv"] or heads)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(a.path / "adapter_model.safetensors")).items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise StudioError(f"{a.name} cannot be exported to GGUF: it holds {key}, which is not a LoRA matrix; "
                              "use it on the hf backend")
        pairs.setdefault(module, {})[kind[0]] = value.astype(np.float32)
    tensors = []
    for module, ab in sorted(pairs.items()):
        target = names.get_name(module)
        dest = f"{target}.weight" if target else None
        if dest not in shapes:
            why = (" (its output layer shares the embedding matrix)" if target == "output" else "")
            raise StudioError(f"{a.name} cannot be exported to GGUF: it adapts {module.rsplit('.', 1)[-1]}, which "
                              f"has no tensor of its own in the llama.cpp model{why}; use it on the hf backend")
        if set(ab) != {"A", "B"}:
            raise StudioError(f"{a.name}'s adapter file lacks half of {module}'s LoRA pair; train the run again")
        lora_a, lora_b = ab["A"], ab["B"]
        rows, cols = shapes[dest][0]
        if lora_b.shape[0] != rows or lora_a.shape[1] != cols or lora_a.shape[0] != lora_b.shape[1]:
            raise StudioError(f"{a.name} does not fit {a.base_model}: {module} is {rows}x{cols} in the GGUF and "
                              f"{lora_b.shape[0]}x{lora_a.shape[1]} in the adapter; was it trained on another model?")
        if arch == "llama" and target.endswith((".attn_q", ".attn_k")):
            lora_b = _permute_rows(lora_b, heads, heads if target.endswith(".attn_q") else kv_heads)
        if cfg.get("use_rslora"):  # PEFT scales by alpha / sqrt(r), llama.cpp by alpha / r
            lora_b = lora_b * math.sqrt(lora_a.shape[0])
        tensors.append((dest, np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b)))
    if not tensors:
        raise StudioError(f"{a.name}'s adapter holds no LoRA matrices; train the run again")
    return LoraWeights(a, base, arch, float(cfg.get("lora_alpha", 8)), tensors)


def export_gguf(run_or_adapter: str | Path) -> Path:
    """Write RUN/adapter.gguf (f32 matrices, alpha and base model recorded); written whole or not at all."""
    w = lora_weights(run_or_adapter)
    out = w.adapter.run_dir / GGUF_ADAPTER
    tmp = _temp_beside(out)
    writer = gguf.GGUFWriter(str(tmp), w.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, w.alpha)
    writer.add_name(w.adapter.name)
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, w.adapter.base_model)
    writer.add_string("studio.base_model.file", w.base.path.name)
    for name, lora_a, lora_b in w.tensors:
        writer.add_tensor(f"{name}.lora_a", lora_a)
        writer.add_tensor(f"{name}.lora_b", lora_b)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def lora_summary(path: Path) -> dict:
    """What an exported adapter GGUF records: alpha, base model, rank and the base weights it adapts."""
    head = gguf_header(Path(path), lambda key: key.startswith(("adapter.", "general.")))
    shapes = gguf_tensors(Path(path))
    targets = sorted(name.removesuffix(".weight.lora_a") for name in shapes if name.endswith(".lora_a"))
    return {"type": head.get("adapter.type"), "alpha": head.get("adapter.lora.alpha"),
            "base_model": head.get("general.base_model.0.name"),
            "rank": max((shapes[f"{t}.weight.lora_a"][0][0] for t in targets), default=0),
            "tensors": len(targets), "modules": sorted({t.split(".")[-1] for t in targets}),
            "layers": len({t.split(".")[1] for t in targets if t.startswith("blk.")})}


def merge_gguf(run_or_adapter: str | Path, quant: str = "f16", threads: int = 0,
               progress: Progress | None = None) -> Path:
    """RUN/merged-QUANT.gguf: the base GGUF with the adapter folded in, every matrix in f16, then quantized by
    llama.cpp's own quantizer when ``quant`` is not f16. The base's quantized weights are the ones the adapter
    was trained against, so they are dequantized exactly and the sum is rounded only once, to f16."""
    if quant not in QUANTS:
        raise StudioError(f"quant must be one of: {', '.join(QUANTS)}")
    w = lora_weights(run_or_adapter)
    out = w.adapter.run_dir / f"merged-{quant}.gguf"
    f16, tmp = _temp_beside(out), _temp_beside(out)
    report = progress or (lambda _f, _d: None)
    try:
        _write_merged_f16(w, f16, report)
        if QUANTS[quant] is None:
            os.replace(f16, out)
        else:
            report(0.8, f"quantizing to {quant} with llama.cpp")
            _quantize(f16, tmp, QUANTS[quant], threads)
            os.replace(tmp, out)
        report(1.0, "done")
        return out
    finally:
        f16.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _temp_beside(out: Path) -> Path:
    """A hidden file name beside ``out`` no other export uses (two tabs may export one run at once); a
    finished file replaces ``out`` in one rename, so a killed export leaves the old file or none. What a
    killed export left (an f16 merge is twice the model's size) is removed once nothing can still be writing
    it: unchanged for an hour."""
    stale = time.time() - STALE_SECONDS
    for left in out.parent.glob(f".{out.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if left.stat().st_mtime < stale:
                left.unlink()
    return out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")


def _write_merged_f16(w: LoraWeights, dest: Path, report: Progress) -> None:
    """The base GGUF's metadata and tensors with every matrix in f16 (the adapted ones with alpha / r x B A
    added); vectors (norms) are copied as they are."""
    report(0.0, "reading the base model")
    reader = gguf.GGUFReader(str(w.base.path))
    writer = gguf.GGUFWriter(str(dest), w.arch)
    try:
        for field in reader.fields.values():
            if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE,
                              gguf.Keys.General.ALIGNMENT) or field.name.startswith("GGUF."):
                continue  # the writer writes these itself
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        if gguf.Keys.General.ALIGNMENT in reader.fields:
            writer.add_custom_alignment(int(reader.fields[gguf.Keys.General.ALIGNMENT].contents()))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_string("studio.merged_adapter", w.adapter.name)
        kept = {t.name for t in reader.tensors if len(t.shape) < 2}
        if not w.targets() <= {t.name for t in reader.tensors} - kept:
            raise StudioError(f"{w.adapter.name} adapts weights the base GGUF lacks; train it on this model again")
        for t in reader.tensors:
            if t.name in kept:
                writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
            else:
                shape = tuple(int(x) for x in reversed(t.shape))
                writer.add_tensor_info(t.name, shape, np.dtype(np.float16), 2 * math.prod(shape),
                                       gguf.GGMLQuantizationType.F16)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, t in enumerate(reader.tensors):
            writer.write_tensor_data(t.data if t.name in kept else _merged(t, w.delta(t.name)))
            report(0.1 + 0.7 * (i + 1) / len(reader.tensors), "folding the adapter into the weights")
    finally:
        writer.close()


def _merged(t, delta: np.ndarray | None) -> np.ndarray:
    """A base matrix in f16: dequantized exactly (whatever its type, f32 included), plus the adapter's delta."""
    try:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    except NotImplementedError:
        raise StudioError(f"the base GGUF's {t.tensor_type.name} weights cannot be read back here; merge from "
                          "a base model in another quantization (q8_0, q4_k_m, f16)") from None
    return (values if delta is None else values + delta).astype(np.float16)


_QUANTIZING = threading.Lock()  # (the logger level below is the process's)


def _quantize(src: Path, dest: Path, ftype: int, threads: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    chatty = logging.getLogger("llama-cpp-python")  # llama.cpp logs a line per tensor through it
    with _QUANTIZING:
        level = chatty.level
        chatty.setLevel(logging.ERROR)
        try:
            failed = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), params)
        finally:
            chatty.setLevel(level)
    if failed:
        raise StudioError("llama.cpp could not quantize the merged model; try --quant f16")


def _arch_enum(arch: str) -> gguf.MODEL_ARCH:
    return {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}[arch]


def _permute_rows(b: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """The row order llama.cpp's converter gives a llama model's query/key weights (``LlamaModel.permute``):
    within each head, the two rotary halves interleaved."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return b.reshape(n_head, 2, b.shape[0] // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)
