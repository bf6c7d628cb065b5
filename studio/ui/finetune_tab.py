"""The Fine-tune tab: pick a dataset and a base model, set LoRA, start a background job, watch its
train and validation loss live, then see before/after metrics and outputs side by side; list the
finished adapters, merge and export them.

Layout and wiring live in :func:`build_finetune_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser:
:func:`make_config` turns the widget values into a checked :class:`FinetuneConfig`, :func:`preview_data`
tokenizes the first rows, :func:`start_job` submits the run and :func:`show` renders a job from its run
folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from finetune.adapters import GGUF_QUANTS
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.jobs import read_json, read_jsonl, read_status
from studio.paths import CONFIGS, Roots
from studio.registry import resolve_model
from studio.ui import jobs_ui
from studio.ui.guard import as_float, as_int, choice, fail, public, text
from studio.ui.jobs_ui import job_choices, job_controls, job_log_panel, jobs, run_dir_of, wire_job_controls
from studio.ui.wiring import Values, on, user_of

PRESETS = CONFIGS / "finetune"
AUTO = "auto"
TASKS = [AUTO, "generation", "classification"]
# the config fields in the order of the preset's outputs and of /finetune_preview and /finetune_start's
# parameters after the upload (API clients call them positionally)
FIELDS = ["data", "task", "base", "r", "alpha", "dropout", "targets", "lr", "epochs", "steps", "batch",
          "accum", "max_length", "eval_every", "patience", "seed", "n_examples", "merge"]
REQUEST = ["upload", *FIELDS]
SHOWN = ["status", "plot", "results", "examples", "adapters", "shown"]


@dataclass
class FinetuneServices:
    """What the Fine-tune tab's handlers work with: where a data file or a base-model folder may be."""

    roots: Roots


def presets() -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(PRESETS.glob("*.yaml"))} if PRESETS.is_dir() else {}


def data_files() -> list[str]:
    d = PRESETS / "data"
    return [str(p.relative_to(CONFIGS.parent)) for p in sorted(d.iterdir())
            if p.suffix in (".jsonl", ".csv", ".json")] if d.is_dir() else []


def loss_plot(events: list[dict], metrics: dict | None = None):
    """Training loss (line) and validation loss (dots); a dashed line at the best step when early
    stopping ended the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    train = [e for e in events if "loss" in e]
    val = [e for e in events if "val_loss" in e]
    if train:
        ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss", lw=1.2)
    if val:
        ax.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-", label="validation loss", color="#c60")
    if metrics and metrics.get("early_stopped") and metrics.get("best_step"):
        ax.axvline(metrics["best_step"], ls="--", color="#666")
        ax.annotate(f"early stop (best step {metrics['best_step']})", (metrics["best_step"], ax.get_ylim()[1]),
                    fontsize=8, ha="left", va="top", xytext=(4, -4), textcoords="offset points")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if train or val:
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def results_table(metrics: dict) -> pd.DataFrame:
    keys = [k for k in metrics.get("after", {}) if k in metrics.get("before", {})]
    return pd.DataFrame([{"metric": k, "before": metrics["before"][k], "after": metrics["after"][k]} for k in keys])


def examples_table(run_dir: Path) -> pd.DataFrame:
    ex = read_json(run_dir / "examples.json", [])
    if not ex:
        return pd.DataFrame()
    first = "prompt" if "prompt" in ex[0] else "text"
    ref = "reference" if "reference" in ex[0] else "label"
    return pd.DataFrame([{first: e.get(first), "expected": e.get(ref), "base model": e.get("base_output"),
                          "fine-tuned": e.get("tuned_output")} for e in ex])


def adapters_md(user: str = LOCAL_USER) -> str:
    from finetune.adapters import list_adapters

    found = list_adapters(user=user)
    if not found:
        return "No finished adapters yet."
    lines = ["| run | task | base model | after | adapter folder | runs on |", "|---|---|---|---|---|---|"]
    for a in found:
        after = ", ".join(f"{k} {v}" for k, v in a.metrics.get("after", {}).items())
        runs_on = "llama.cpp (exported)" if a.gguf else "hf" if a.task == "generation" else "hf (classifier)"
        lines.append(f"| {a.name} | {a.task} | {a.base_model} | {after} | `{public(str(a.path))}` | {runs_on} |")
    return "\n".join(lines) + ("\n\nGeneration adapters appear in Chat → Model → LoRA adapter and in the Prompt "
                               "Lab. **Export to llama.cpp** makes one run about 3x faster there.")


def status_md(job, run_dir: Path) -> str:
    st = read_status(run_dir)
    parts = [f"**{job.state}**", f"{st.get('task', '?')} on {st.get('base_model', '?')}",
             f"step {st.get('step', 0)}/{st.get('max_steps', '?')}"]
    if st.get("trainable_share") is not None:
        parts.append(f"trainable {st['trainable']:,} of {st['total_params']:,} parameters "
                     f"({100 * st['trainable_share']:.2f}%)")
    if st.get("train") is not None:
        parts.append(f"{st['train']} train / {st['val']} validation rows")
    text = " · ".join(parts) + f"\n\nrun folder `{public(str(run_dir))}`"
    if st.get("truncated"):
        text += f"\n\n{st['truncated']} examples were cut to max_length."
    if st.get("bad_rows"):
        shown = "; ".join(f"line {b['line']}: {b['error']}" for b in st["bad_rows"][:5])
        text += f"\n\n**{len(st['bad_rows'])} malformed rows skipped** ({shown})"
    if job.state == "failed":
        text += f"\n\n**Error:** {st.get('error') or job.error}"
    m = read_json(run_dir / "metrics.json", {})
    if m.get("early_stopped"):
        text += f"\n\nEarly stopping ended the run; the adapter is from the best step, {m.get('best_step')}."
    return text


# --- handlers ------------------------------------------------------------------------------------------
def fill_preset(v: Values) -> Values:
    """A preset's values in the fields (its data file, task, base model, LoRA and training settings)."""
    from finetune.config import FinetuneConfig
    from studio.config import load_config

    name = v["preset"]
    if not name:
        return {"data": gr.skip()}  # Gradio refuses an empty update for several outputs
    c = load_config(FinetuneConfig, presets()[choice(name, list(presets()), "preset")])
    values = [c.data, c.task or AUTO, c.base_model or AUTO, c.r, c.alpha, c.dropout, ",".join(c.target_modules),
              c.lr, c.epochs, max(0, c.steps), c.batch_size, c.grad_accum, c.max_length, c.eval_every,
              c.early_stopping, c.seed, c.eval_examples, c.merge]
    return dict(zip(FIELDS, values, strict=True))


def make_config(v: Values, roots: Roots):
    """The checked :class:`FinetuneConfig` the widgets ask for: the data file (an upload, else the typed
    path) and a base-model folder inside ``roots``, every number a number within the core's limits."""
    from finetune.config import FinetuneConfig

    path = v["upload"] or (v["data"] or "").strip()
    if not path:
        raise gr.Error("Pick a dataset or upload one.")
    choice(v["task"], TASKS, "task")
    ms = as_int(v["steps"], "steps", 0)
    try:
        base = None if v["base"] in (AUTO, "", None) else v["base"]
        if base is not None:
            resolve_model(base, roots=roots)  # a folder must be one the studio may read
        return FinetuneConfig(
            data=str(roots.resolve(path, "dataset")), task=None if v["task"] == AUTO else v["task"],
            base_model=base, r=as_int(v["r"], "LoRA rank"), alpha=as_int(v["alpha"], "alpha"),
            dropout=as_float(v["dropout"], "dropout"),
            target_modules=[t.strip() for t in text(v["targets"], "target modules").split(",") if t.strip()],
            lr=as_float(v["lr"], "learning rate"), epochs=as_float(v["epochs"], "epochs"),
            steps=ms if ms > 0 else -1, batch_size=as_int(v["batch"], "batch size"),
            grad_accum=as_int(v["accum"], "gradient accumulation"), max_length=as_int(v["max_length"], "max length"),
            eval_every=max(1, as_int(v["eval_every"], "evaluate every")),
            early_stopping=as_int(v["patience"], "patience"), seed=as_int(v["seed"], "seed", 0),
            eval_examples=as_int(v["n_examples"], "examples"), merge=bool(v["merge"])).check()
    except StudioError as exc:
        raise fail(exc) from None


def preview_data(v: Values, *, services: FinetuneServices) -> Values:
    """The dataset's size, task and labels, its malformed rows and the first three rows tokenized, with
    the part the model learns from (loads the base model's tokenizer only)."""
    from finetune.data import encode_classification, encode_generation, load_dataset
    from finetune.data import preview as show_rows
    from finetune.train import load_tokenizer

    cfg = make_config(v, services.roots)
    try:
        ds = load_dataset(cfg.data, cfg.task)
        tok = load_tokenizer(cfg, ds.task)
    except StudioError as exc:
        raise fail(exc) from None
    enc = encode_generation(ds.rows[:200], tok, cfg.max_length) if ds.task == "generation" \
        else encode_classification(ds.rows[:200], tok, ds.labels, cfg.max_length)
    lines = [f"**{len(ds.rows)} rows**, task **{ds.task}**"
             + (f", labels {', '.join(ds.labels)}" if ds.labels else "")
             + (f"; {enc.truncated} of the first {len(enc.input_ids)} cut to {cfg.max_length} tokens"
                if enc.truncated else "")]
    if ds.bad:
        lines.append(f"**{len(ds.bad)} malformed rows will be skipped:** "
                     + "; ".join(f"line {n}: {e}" for n, e in ds.bad[:8]))
    for i, item in enumerate(show_rows(enc, tok, 3), 1):
        learned = f"learned: `{item['learned']}`" if "learned" in item else f"label: {ds.labels[item['label']]}"
        lines.append(f"{i}. {item['tokens']} tokens; {learned}\n\n```\n{item['text']}\n```")
    return {"preview": "\n\n".join(lines)}


def start_job(v: Values, *, services: FinetuneServices, user: str = LOCAL_USER,
              session: str = "") -> Values:
    """Check the config and the data file, write the run folder and submit the job; the picker shows it."""
    from finetune.data import load_dataset

    cfg = make_config(v, services.roots)
    try:
        ds = load_dataset(cfg.data, cfg.task)  # a bad file fails here, with its reason, not in the job
    except StudioError as exc:
        raise fail(exc) from None
    if len(ds.rows) < 2:
        raise gr.Error("The dataset needs at least two good rows (one for validation).")
    return jobs_ui.submit_job(cfg, "finetune", "finetune", Path(cfg.data).stem, ["finetune", "run"],
                              user, session)


def show(v: Values, *, user: str = LOCAL_USER) -> Values:
    """Render the picked job: status, loss curve and, once finished, results, examples and adapters.

    The 2 s timer passes what it last rendered (``shown``); nothing is redrawn (no plot, no adapter
    scan) until the job's status.json or state changes."""
    job_id, last = v["job"], v.get("shown")
    rd = run_dir_of(job_id, user)
    if rd is None:
        return {"status": "No job selected.", "shown": None}
    j = jobs(user).get(job_id)
    key = [job_id, j.state, read_status(rd).get("updated")]
    if key == last:
        return {"shown": last}
    metrics = read_json(rd / "metrics.json", {})
    out = {"status": status_md(j, rd), "plot": loss_plot(read_jsonl(rd / "events.jsonl"), metrics), "shown": key}
    if metrics.get("after"):
        out.update(results=results_table(metrics), examples=examples_table(rd), adapters=adapters_md(user))
    return out


def refresh(_v: Values, *, user: str = LOCAL_USER) -> Values:
    return {"job": gr.update(choices=job_choices("finetune", user)), "adapters": adapters_md(user)}


def use_upload(v: Values) -> Values:
    """An uploaded file becomes the dataset."""
    return {"data": gr.update(value=v["upload"])}


MERGED = ["hf folder", *(f"GGUF {q}" for q in GGUF_QUANTS)]  # the merge button's formats


def merge_adapter(v: Values, progress=gr.Progress(), user: str = LOCAL_USER) -> Values:  # noqa: B008
    """Fold the picked job's adapter into a full model: a transformers folder, or one llama.cpp GGUF (f16 or
    quantized by llama.cpp)."""
    from finetune.adapters import merge
    from finetune.gguf_export import merge_gguf

    rd = run_dir_of(v["job"], user)
    if rd is None:
        raise gr.Error("Pick a finished job first.")
    fmt = choice(v.get("merge_format") or MERGED[0], MERGED, "the merged format")
    try:
        if fmt == MERGED[0]:
            progress(0.1, desc="loading the base model and folding in the adapter")
            out = merge(rd)
            return {"action_note": f"Merged model: `{public(str(out))}` (loads with plain transformers, no peft "
                                   "needed)."}
        out = merge_gguf(rd, fmt.split()[1], progress=lambda f, what: progress(f, desc=what))
    except StudioError as exc:
        raise fail(exc) from None
    return {"action_note": f"Merged GGUF: `{public(str(out))}` ({out.stat().st_size / 1e6:.0f} MB): one file for "
                           "llama.cpp; the Models tab can import it as a chat model."}


def export_gguf_adapter(v: Values, progress=gr.Progress(), user: str = LOCAL_USER) -> Values:  # noqa: B008
    """Write the picked job's adapter as a GGUF LoRA adapter (RUN/adapter.gguf): Chat and the Prompt Lab then
    run it on llama.cpp."""
    from finetune.gguf_export import export_gguf, lora_summary

    rd = run_dir_of(v["job"], user)
    if rd is None:
        raise gr.Error("Pick a finished job first.")
    progress(0.2, desc="writing the LoRA matrices for llama.cpp")
    try:
        out = export_gguf(rd)
    except StudioError as exc:
        raise fail(exc) from None
    info = lora_summary(out)
    return {"adapters": adapters_md(user),
            "action_note": f"Exported for llama.cpp: `{out.name}` ({out.stat().st_size / 1e6:.1f} MB; rank "
                           f"{info['rank']}, alpha {info['alpha']:g}, {', '.join(info['modules'])} in "
                           f"{info['layers']} layers; base {public(str(info['base_model']))}). Pick the adapter in "
                           "Chat: it now runs on llama.cpp."}


def export_adapter(v: Values, *, user: str = LOCAL_USER) -> Values:
    """The picked job's adapter as a .zip the page offers for download."""
    from finetune.adapters import export

    rd = run_dir_of(v["job"], user)
    if rd is None:
        raise gr.Error("Pick a finished job first.")
    try:
        out = export(rd, rd / "export" / f"{rd.name}-adapter.zip")
    except StudioError as exc:
        raise fail(exc) from None
    return {"export_file": gr.update(value=str(out), visible=True),
            "action_note": f"Exported `{out.name}` ({out.stat().st_size / 1e6:.1f} MB)."}


# --- layout ---------------------------------------------------------------------------------------------
def _dataset(ui: dict) -> None:
    ui["preset"] = gr.Dropdown(list(presets()), value=None, label="Start from a preset (fills the fields)",
                               elem_id="ft-preset")
    ui["data"] = gr.Dropdown(data_files(), value=None, allow_custom_value=True, elem_id="ft-data",
                             label="Dataset: JSONL (messages or instruction/output) or CSV/JSONL (text,label)")
    ui["upload"] = gr.File(label="…or upload one", file_types=[".jsonl", ".csv", ".json"], height=90)
    with gr.Row():
        ui["task"] = gr.Radio(TASKS, value=AUTO, label="Task")
        ui["base"] = gr.Dropdown([AUTO, "smollm2-135m-instruct", "minilm-l6-v2"], value=AUTO,
                                 allow_custom_value=True, label="Base model (or a local HF folder)")
    with gr.Row():
        ui["r"] = gr.Number(8, precision=0, label="LoRA rank r")
        ui["alpha"] = gr.Number(16, precision=0, label="alpha")
        ui["dropout"] = gr.Number(0.05, label="dropout")
        ui["targets"] = gr.Textbox("", label="Target modules", placeholder="auto (q_proj,v_proj / query,value)")


def _training(ui: dict) -> None:
    with gr.Row():
        ui["lr"] = gr.Number(0.0005, label="Learning rate")
        ui["epochs"] = gr.Number(3, label="Epochs")
        ui["steps"] = gr.Number(0, precision=0, label="Steps (0 = by epochs)", elem_id="ft-max-steps")
    with gr.Row():
        ui["batch"] = gr.Number(8, precision=0, label="Batch size")
        ui["accum"] = gr.Number(1, precision=0, label="Gradient accumulation")
        ui["max_length"] = gr.Number(256, precision=0, label="Max length (tokens)")
    with gr.Row():
        ui["eval_every"] = gr.Number(20, precision=0, label="Evaluate every (steps)", elem_id="ft-eval-every")
        ui["patience"] = gr.Number(3, precision=0, label="Early stopping patience (0 = off)")
        ui["seed"] = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        ui["n_examples"] = gr.Number(20, precision=0, label="Examples in the before/after", elem_id="ft-examples")
        ui["merge"] = gr.Checkbox(False, label="Also save a merged model")
    with gr.Row():
        ui["preview_btn"] = gr.Button("Preview tokenized data", elem_id="ft-preview-btn")
        ui["start"] = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")


def _results(ui: dict) -> None:
    ui["preview"] = gr.Markdown("", elem_id="ft-preview")
    ui["status"] = gr.Markdown("No job selected.", elem_id="ft-status")
    ui["plot"] = gr.Plot(label="Loss", elem_id="ft-plot")
    ui["results"] = gr.Dataframe(label="Validation split: before → after", elem_id="ft-results", interactive=False)
    ui["examples"] = gr.Dataframe(label="Outputs side by side", elem_id="ft-examples-table", interactive=False,
                                  wrap=True, column_widths=["28%", "16%", "28%", "28%"])


def _adapters(ui: dict) -> None:
    with gr.Accordion("Finished adapters", open=True):
        ui["adapters"] = gr.Markdown("", elem_id="ft-adapters")  # the visitor's own, filled on refresh
        with gr.Row():
            ui["gguf_btn"] = gr.Button("Export to llama.cpp", variant="primary", elem_id="ft-export-gguf")
            ui["export_btn"] = gr.Button("Export the selected job's adapter (.zip)")
        with gr.Row():
            ui["merge_format"] = gr.Dropdown(MERGED, value=MERGED[0], label="Merged model format",
                                             elem_id="ft-merge-format")
            ui["merge_btn"] = gr.Button("Merge the selected job's adapter into a full model")
        ui["export_file"] = gr.File(label="Export", visible=False)
        ui["action_note"] = gr.Markdown("", elem_id="ft-action-note")


def _wire(ui: dict, s: FinetuneServices) -> None:
    wire_job_controls(ui, "finetune", show, SHOWN, ["shown"])
    on(ui["preset"].input, fill_preset, ui, ["preset"], FIELDS, api_name="finetune_preset")
    # api names of events that had none kept as Gradio gave them (lambda, do_merge, ...) for API clients
    on(ui["upload"].upload, use_upload, ui, ["upload"], ["data"], api_name="lambda")
    on(ui["preview_btn"].click, partial(preview_data, services=s), ui, REQUEST, ["preview"],
       api_name="finetune_preview")
    started = on(ui["start"].click, partial(start_job, services=s), ui, REQUEST, ["job"], api_name="finetune_start")
    on(started.then, show, ui, ["job"], SHOWN, api_name="finetune_show")
    on(ui["refresh"].click, refresh, ui, [], ["job", "adapters"], api_name="lambda_1")
    on(ui["merge_btn"].click, merge_adapter, ui, ["job", "merge_format"], ["action_note"], api_name="do_merge",
       defaults={"merge_format": MERGED[0]})
    on(ui["gguf_btn"].click, export_gguf_adapter, ui, ["job"], ["adapters", "action_note"], api_name="export_gguf")
    on(ui["export_btn"].click, export_adapter, ui, ["job"], ["export_file", "action_note"], api_name="do_export")


def build_finetune_tab(roots: Roots):
    """``roots``: where the data file and a base-model folder typed in the tab may be. Returns (fn, outputs)
    to run when a page loads: the visitor's own jobs and adapters."""
    ui: dict = {}
    gr.Markdown("LoRA fine-tuning on this machine's CPU: only small adapter matrices train, so the bundled "
                "135M model learns a new format in minutes. Jobs run in the background; leave the tab and come back.")
    with gr.Row():
        with gr.Column(scale=2):
            _dataset(ui)
            _training(ui)
            job_controls(ui, "finetune", "ft")
            job_log_panel(ui, "ft")
        with gr.Column(scale=3):
            _results(ui)
    _adapters(ui)
    ui["timer"] = gr.Timer(2.0)
    ui["shown"] = gr.State(None)
    _wire(ui, FinetuneServices(roots))

    def page_load(request: gr.Request):
        return {ui[n]: update for n, update in refresh({}, user=user_of(request)).items()}

    return page_load, [ui["job"], ui["adapters"]]
