"""Finished fine-tune runs and what can be done with their adapters: list, use in chat, merge, export.

>>> [a.name for a in list_adapters()]                # finished runs with an adapter/ folder
>>> merge(run_dir)                                   # run_dir/merged: a full model, no peft needed
>>> export(run_dir, "capitals-lora.zip")             # the adapter folder plus config and metrics
>>> adapter_of(run_dir).serving()                    # ("llamacpp", RUN/adapter.gguf) once exported for llama.cpp

Writing the GGUF forms (``RUN/adapter.gguf``, a merged GGUF) is :mod:`finetune.gguf_export`.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from studio.env import LOCAL_USER, home_dir
from studio.errors import StudioError
from studio.jobs import Jobs, read_json, read_status

GGUF_ADAPTER = "adapter.gguf"  # beside RUN/adapter: the same LoRA for llama.cpp (finetune.gguf_export)
GGUF_QUANTS = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_1")  # what a merged GGUF's weights can be


@dataclass
class Adapter:
    name: str           # the run folder's name
    run_dir: Path
    task: str           # generation | classification
    base_model: str     # registry name or folder the adapter was trained on
    metrics: dict       # {"before": {...}, "after": {...}} when the run got that far

    @property
    def path(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def gguf(self) -> Path | None:
        """RUN/adapter.gguf when it was exported from the adapter as it is now (not before a later training)."""
        out, src = self.run_dir / GGUF_ADAPTER, self.path / "adapter_model.safetensors"
        if out.is_file() and src.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
            return out
        return None

    def label(self) -> str:
        after = self.metrics.get("after", {})
        shown = ", ".join(f"{k} {after[k]}" for k in ("exact_match", "accuracy", "val_loss") if k in after)
        runs_on = "; llama.cpp" if self.gguf else ""
        return f"{self.name} ({self.task}, {self.base_model}{'; ' + shown if shown else ''}{runs_on})"

    def serving(self, backend: str | None = None) -> tuple[str, str]:
        """(backend, what it loads) to chat with this adapter: llama.cpp with RUN/adapter.gguf when it was
        exported and no other backend is asked for (about 3x the tokens/s of hf here: README), else hf with
        the PEFT folder."""
        if self.task != "generation":
            raise StudioError(f"{self.name} is a {self.task} adapter; chat needs a generation one")
        if backend in (None, "llamacpp") and self.gguf:
            return "llamacpp", str(self.gguf)
        if backend == "llamacpp":
            raise StudioError(f"{self.name} has not been exported for llama.cpp yet: use the Fine-tune tab's "
                              "Export to llama.cpp button or `studio finetune export RUN --format gguf`, "
                              "or the hf backend")
        if backend not in (None, "hf"):
            raise StudioError("a LoRA adapter runs on the llamacpp backend (once exported) or the hf backend")
        return "hf", str(self.path)


def adapter_of(run_or_adapter: str | Path) -> Adapter:
    """The adapter of a run folder (or of its ``adapter/`` folder itself)."""
    p = Path(run_or_adapter)
    run_dir = p.parent if (p / "adapter_config.json").is_file() else p
    if not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise StudioError(f"{p} has no finished adapter (adapter/adapter_config.json); "
                          "`studio finetune adapters` lists the finished runs")
    status = read_status(run_dir)
    task = status.get("task") or "generation"
    base = status.get("base_model") or ("smollm2-135m-instruct" if task == "generation" else "minilm-l6-v2")
    return Adapter(run_dir.name, run_dir, task, base, read_json(run_dir / "metrics.json", {}))


def list_adapters(task: str | None = None, user: str = LOCAL_USER) -> list[Adapter]:
    """``user``'s finished runs with an adapter, newest first: the runs of their fine-tune jobs, and (for the
    local user) run folders under $STUDIO_HOME/runs/finetune that no other account's job made."""
    owners = {Path(j.run_dir): j.owner for j in Jobs(user=LOCAL_USER).list()}  # (the local user sees every job)
    dirs = {p.parent.parent for p in (home_dir() / "runs" / "finetune").glob("*/adapter/adapter_config.json")}
    dirs |= {d for d in owners if (d / "adapter" / "adapter_config.json").is_file()}
    dirs = {d for d in dirs if owners.get(d, LOCAL_USER) == user}
    found = []
    for d in dirs:
        try:
            a = adapter_of(d)
        except StudioError:
            continue
        if task is None or a.task == task:
            found.append(a)
    return sorted(found, key=lambda a: (a.path / "adapter_config.json").stat().st_mtime, reverse=True)


def merge(run_or_adapter: str | Path) -> Path:
    """Fold the LoRA weights into the base model: ``RUN/merged`` loads with plain transformers."""
    from peft import PeftModel

    a = adapter_of(run_or_adapter)
    out = a.run_dir / "merged"
    if (out / "config.json").is_file():
        return out
    from finetune.config import FinetuneConfig
    from finetune.train import load_base

    labels = read_status(a.run_dir).get("labels") or []
    model, tok = load_base(FinetuneConfig(base_model=a.base_model), a.task, labels)
    merged = PeftModel.from_pretrained(model, str(a.path)).merge_and_unload()
    tmp = out.with_name("merged.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def export(run_or_adapter: str | Path, out: str | Path) -> Path:
    """A zip of the adapter folder with the run's config.yaml and metrics.json beside it."""
    a = adapter_of(run_or_adapter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(a.path.rglob("*")):
            if f.is_file():
                z.write(f, Path("adapter") / f.relative_to(a.path))
        for extra in ("config.yaml", "metrics.json", "examples.json"):
            if (a.run_dir / extra).is_file():
                z.write(a.run_dir / extra, extra)
    return out
