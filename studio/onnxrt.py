"""ONNX Runtime for the small transformer encoders (the embedder, the claim encoder): export once, cache
under ``$STUDIO_HOME/cache/onnx/``, run without torch.

The export traces the module on a *padded* batch of two inputs of different lengths. Traced on one
unpadded input, BERT's attention-mask path is frozen as a constant and padded batches come out wrong,
so every caller also checks the exported model against the PyTorch one on probe inputs before using it
and records the verdict next to it (``verified.json``); a model without a verdict is exported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

from studio.env import home_dir
from studio.errors import StudioError

log = logging.getLogger(__name__)


def cache_dir(name: str, folder: Path) -> Path:
    """The cache folder for the ONNX export of the model in ``folder``, keyed on its weights file."""
    weights = folder / "model.safetensors"
    stat = weights.stat()
    key = hashlib.sha256(f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = home_dir("cache", "onnx") / f"{name}-{key}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def export(module, inputs: dict, output: str, out: Path) -> None:
    """Trace ``module(**inputs)`` (the TorchScript exporter) into ``out`` with dynamic batch and token axes.
    ``inputs`` should be a padded batch (see the module docstring)."""
    import torch

    axes = {k: {0: "batch", 1: "tokens"} for k in inputs}
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # two processes exporting at once must not share it
    with warnings.catch_warnings():  # tracer chatter; the caller's probe check is the real guard
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(inputs.values()), str(tmp), input_names=list(inputs),
                          output_names=[output], dynamic_axes={**axes, output: {0: "batch"}}, opset_version=17,
                          dynamo=False)
    tmp.replace(out)


def session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session with all graph optimisations (``threads=0``: ONNX Runtime's choice)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def read_verdict(folder: Path) -> dict | None:
    """The recorded check of ``folder/model.onnx``, or None when either is missing (then: export again)."""
    path = folder / "verified.json"
    return json.loads(path.read_text()) if path.is_file() and (folder / "model.onnx").is_file() else None


def write_verdict(folder: Path, verdict: dict) -> None:
    (folder / "verified.json").write_text(json.dumps(verdict))


def pick_engine(owner, engine: str, what: str, reference: str) -> str:
    """Set ``owner._session, owner._tokenizer`` from ``owner._load_onnx()`` and return "onnx", or return
    "torch" (``engine="torch"``, or ``"auto"`` when the export fails or drifts: logged with the reason).
    ``engine="onnx"`` turns a failure into a :class:`StudioError`."""
    if engine not in ("auto", "onnx", "torch"):
        raise StudioError(f"the {what} engine must be auto, onnx or torch, not {engine!r}")
    if engine == "torch":
        return "torch"
    try:
        owner._session, owner._tokenizer = owner._load_onnx()
        return "onnx"
    except Exception as exc:  # any export/runtime problem falls back to the reference engine
        if engine == "onnx":
            raise StudioError(f"the {what} cannot run on ONNX Runtime: {exc}") from None
        log.warning("the %s cannot run on ONNX Runtime (%s); using %s", what, exc, reference)
        return "torch"
