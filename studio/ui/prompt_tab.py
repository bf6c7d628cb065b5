"""The Prompt Lab tab: techniques side by side on one task, scored, with the vote chart.

Layout and wiring live in :func:`build_prompt_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser:
:func:`pick_task` fills the form from the task library, :func:`run_techniques` runs the chosen techniques
on the task and :func:`run_library` runs them over the whole library.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from functools import partial

import gradio as gr
import pandas as pd

from studio.backends import BackendCache, GenerationSettings
from studio.config import StudioConfig, load_config
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.limits import check_json_schema
from studio.markup import neutralize
from studio.paths import CONFIGS
from studio.prompting.bench import PromptSuite, score
from studio.prompting.techniques import TECHNIQUES, Task, run_technique
from studio.registry import backend_for
from studio.turns import Turns
from studio.ui.chat_tab import NO_ADAPTER, adapter_choices, picked_adapter
from studio.ui.guard import as_float, as_int, choice, fail, public, text
from studio.ui.wiring import Values, on, user_of

DEFAULT_SCHEMA = '{"type": "object", "properties": {"answer": {"type": "number"}}, "required": ["answer"]}'
LIBRARY = CONFIGS / "prompts"
OWN_TASK = "(write your own)"
KINDS = ["number", "option", "text"]
CHECKS = {"number": "numeric", "option": "exact", "text": "contains"}  # how a task of your own is scored
COLUMNS = ["technique", "answer", "correct", "tokens", "seconds", "cached"]
REQUEST = ["task_pick", "question", "kind", "expected", "labels", "examples", "schema", "techniques", "samples",
           "temperature", "top_p", "top_k", "seed", "adapter"]  # /prompt_run's parameters, in this order
SHOWN = ["table", "votes", "vote_stats", "details"]


def library() -> dict[str, tuple[PromptSuite, dict]]:
    """'suite: question' -> (suite, task) for every task in configs/prompts/."""
    out = {}
    for path in sorted(LIBRARY.glob("*.yaml")):
        suite = load_config(PromptSuite, path)
        for item in suite.tasks:
            out[f"{suite.name}: {item['q'][:70]}"] = (suite, item)
    return out


@dataclass
class PromptServices:
    """What the Prompt Lab's handlers work with: the config (which chat model), loaded models, the library."""

    cfg: StudioConfig
    backends: BackendCache
    tasks: dict[str, tuple[PromptSuite, dict]] = field(default_factory=dict)
    turns: Turns = field(default_factory=Turns)  # each account's runs one at a time, with the Chat tab's

    def backend(self, adapter: str | None = None, user: str = LOCAL_USER):
        """The prompt role's model (the Models tab sets it), else the chat model with its backend; with a
        fine-tune's ``adapter`` (picked from the tab's list), its base model with the adapter, on llama.cpp once
        exported to GGUF."""
        c = self.cfg.chat
        picked = picked_adapter(adapter, None, user)
        if picked:
            try:
                return self.backends.get(picked[0], picked[1], None, picked[2])
            except StudioError as exc:
                raise fail(exc) from None
        if c.prompt_model and c.prompt_model != c.model:
            try:
                return self.backends.get(backend_for(c.prompt_model), c.prompt_model)
            except StudioError as exc:
                raise fail(exc) from None
        return self.backends.get(c.backend, c.model, c.base_url)


@dataclass
class LabRequest:
    """One side-by-side run, checked: the task (with its suite's scoring), techniques and sampling."""

    suite: PromptSuite
    task: Task
    techniques: list[str]
    expected: str
    samples: int
    temperature: float
    top_p: float
    top_k: int
    seed: int

    def settings(self, technique: str) -> GenerationSettings:
        """Greedy for every technique but self-consistency, which samples at the chosen temperature."""
        return GenerationSettings(temperature=self.temperature if technique == "self-consistency" else 0.0,
                                  top_p=self.top_p, top_k=self.top_k, max_tokens=256, seed=self.seed)


def _no_progress(*_args, **_kwargs) -> None:
    pass


def _expected(text: str, suite: PromptSuite):
    """The expected answer as the suite's check compares it: a number, a JSON object or text."""
    try:
        if suite.check == "json_fields":
            return json.loads(text.replace("'", '"'))
        return float(text) if suite.check == "numeric" else text
    except ValueError:
        want = "a number" if suite.check == "numeric" else "a JSON object of the expected fields"
        raise gr.Error(f"The expected answer must be {want} for this task, got {text[:60]!r}") from None


def _techniques(v: Values) -> list[str]:
    return [choice(t, list(TECHNIQUES), "technique") for t in (v["techniques"] or [])]


def _user_schema(value) -> dict | None:
    """The JSON schema box: None when empty; refused when not JSON or over the core's size limits."""
    value = text(value, "the JSON schema", "json_schema_chars")
    try:
        return check_json_schema(json.loads(value)) if value.strip() else None
    except (ValueError, RecursionError) as exc:
        raise gr.Error(f"The JSON schema is not valid JSON: {exc}") from None
    except StudioError as exc:
        raise fail(exc) from None


# --- handlers ------------------------------------------------------------------------------------------
def lab_request(v: Values, *, services: PromptServices) -> LabRequest:
    """The form's values checked as the core would (every value is untrusted: this is an HTTP endpoint)."""
    q, exs = text(v["question"], "the task"), text(v["examples"], "the few-shot examples")
    labels, exp = text(v["labels"], "the labels"), text(v["expected"], "the expected answer")
    chosen = _techniques(v)
    kind = choice(v["kind"], KINDS, "answer kind")
    n, seed = as_int(v["samples"], "samples"), as_int(v["seed"], "seed", 0)
    temp, tp = as_float(v["temperature"], "temperature"), as_float(v["top_p"], "top-p")
    tk = as_int(v["top_k"], "top-k")
    if not q.strip() or not chosen:
        raise gr.Error("Write a task and choose at least one technique.")
    picked = services.tasks.get(v["task_pick"])
    suite = picked[0] if picked else PromptSuite(kind=kind, check=CHECKS[kind])
    pairs = [line.split("=>", 1) for line in exs.splitlines() if "=>" in line]
    user_schema = _user_schema(v["schema"])
    suite = PromptSuite(**{**suite.__dict__, "kind": kind,
                           "labels": [x.strip() for x in labels.split(",") if x.strip()],
                           "examples": [{"q": a.strip(), "a": b.strip()} for a, b in pairs],
                           "schema": suite.schema or user_schema})
    return LabRequest(suite, suite.task({"q": q}), chosen, exp, n, temp, tp, tk, seed)


def _result_row(req: LabRequest, technique: str, res: dict) -> list:
    ok = "" if not req.expected.strip() else ("yes" if score(req.suite, res, _expected(req.expected, req.suite))
                                              else "no")
    return [technique, res["answer"] or "(none)", ok, res["completion_tokens"], res["seconds"],
            "yes" if res["cached"] else ""]


def _prompt_block(technique: str, res: dict) -> str:
    """The exact prompt the technique sent, its output and (json) whether it fits the schema."""
    prompt = "\n\n".join(f"**{m['role']}**: {m['content']}" for m in res["prompt"])
    valid = ("" if "valid_json" not in res else
             f"\n\n**valid against the schema**: {'yes' if res['valid_json'] else 'no'}")
    return f"#### {technique}\n{prompt}\n\n**output**: {res['output']}{valid}"


def vote_order(answers) -> list[str]:
    """Answers in reading order: numbers by value (1, 2, 120), then words alphabetically."""
    def key(a: str):
        try:
            return (0, float(a), "")
        except ValueError:
            return (1, 0.0, a)

    return sorted(answers, key=key)


def votes_html(votes: dict, samples: int) -> str:
    """The vote chart as HTML bars: one bar per answer, its length the share of the ``samples`` votes
    (zero-based, so a one-vote answer has a bar), answers in :func:`vote_order`, the count beside each.

    Why not ``gr.BarPlot``: its Vega axis started at the smallest count (one-vote answers had no bar) and
    sorted answers as text; these bars are readable without a plotting library and can be checked in a page."""
    counts = {str(a): int(n) for a, n in votes.items()}
    rows = []
    for answer in vote_order(list(counts)):
        n = counts[answer]
        rows.append(f"<div class='vote-row'><span class='vote-answer'>{html.escape(answer) or '(none)'}</span>"
                    f"<span class='vote-track'><span class='vote-bar' style='width:{100 * n / max(1, samples):.1f}%'>"
                    f"</span></span><span class='vote-count'>{n} vote{'s' if n != 1 else ''}</span></div>")
    return f"<div class='votes' aria-label='self-consistency votes'><b>Self-consistency votes</b>{''.join(rows)}</div>"


def _votes(res: dict, samples: int) -> Values:
    """Self-consistency's vote chart, the line under it and every sample with the answer read from it."""
    listed = "\n".join(f"{i}. **{neutralize(str(x['answer']) or '(none)')}**: "
                       f"{neutralize(' '.join(x['text'].split())[:300])}"
                       for i, x in enumerate(res.get("samples", []), 1))
    stats = (f"majority **{res['answer']}** · agreement {res['agreement']:.2f} · entropy "
             f"{res['entropy']:.2f} bits over {int(samples)} samples. Sampling several reasoning paths "
             "and voting cancels out paths that went wrong; high agreement means the answer is stable."
             + (f"\n\n**Every sample** (its answer, then its text):\n\n{listed}" if listed else ""))
    return {"votes": votes_html(res["votes"], int(samples)), "vote_stats": stats}


def run_techniques(v: Values, *, services: PromptServices, progress=_no_progress, user: str = LOCAL_USER) -> Values:
    """Each chosen technique on the task: the results table, the vote chart and its line (self-consistency),
    and every prompt sent. A technique the core refuses gets an error row; the others still run."""
    req = lab_request(v, services=services)
    backend = services.backend(v.get("adapter"), user)
    rows, blocks = [], []
    out: Values = {"votes": "", "vote_stats": ""}
    for i, technique in enumerate(req.techniques):
        progress((i, len(req.techniques)), desc=technique)
        try:
            res = run_technique(backend, req.task, technique, req.settings(technique), req.samples)
        except StudioError as exc:
            rows.append([technique, f"error: {public(str(exc))}", "", 0, 0, ""])
            continue
        rows.append(_result_row(req, technique, res))
        blocks.append(_prompt_block(technique, res))
        if technique == "self-consistency":
            out.update(_votes(res, req.samples))
    return {"table": rows, **out, "details": "\n\n---\n\n".join(blocks)}


def run_library(v: Values, *, services: PromptServices, progress=_no_progress, user: str = LOCAL_USER) -> Values:
    """The chosen techniques over every task in configs/prompts/: accuracy per technique and suite."""
    from studio.prompting.bench import run_bench

    chosen = _techniques(v)
    n, seed = as_int(v["samples"], "samples"), as_int(v["seed"], "seed", 0)
    if not chosen:
        raise gr.Error("Choose at least one technique.")
    suites = [load_config(PromptSuite, p) for p in sorted(LIBRARY.glob("*.yaml"))]
    res = run_bench(suites, chosen, services.backend(v.get("adapter"), user),
                    GenerationSettings(temperature=0.0, max_tokens=192, seed=int(seed or 0)), int(n),
                    progress=lambda d, t, what: progress((d, t), desc=what))
    names = [s.name for s in suites]
    table = pd.DataFrame([[t, *(round(row[n_], 2) for n_ in names), res["seconds"][t]]
                          for t, row in res["table"].items()], columns=["technique", *names, "seconds"])
    return {"library_table": table}


def pick_task(v: Values, *, services: PromptServices) -> Values:
    """A library task fills the form (question, kind, expected answer, labels, examples); anything else
    leaves it as it is."""
    if v["task_pick"] not in services.tasks:
        return {}
    suite, item = services.tasks[v["task_pick"]]
    exs = "\n".join(f"{e['q']} => {e['a']}" for e in suite.examples)
    return {"question": item["q"], "kind": suite.kind, "expected": str(item["expected"]),
            "labels": ", ".join(suite.labels), "examples": exs}


# --- layout ---------------------------------------------------------------------------------------------
def _task(ui: dict, tasks: dict) -> None:
    ui["task_pick"] = gr.Dropdown([OWN_TASK, *tasks], value=OWN_TASK, label="Task library", elem_id="pl-library")
    ui["question"] = gr.Textbox("Tom has 3 apples and buys 4 more. How many apples does he have?", lines=3,
                                label="Task", elem_id="pl-question")
    with gr.Row():
        ui["kind"] = gr.Radio(KINDS, value="number", label="Answer kind")
        ui["expected"] = gr.Textbox("7", label="Expected answer (optional)", elem_id="pl-expected")
    ui["labels"] = gr.Textbox("", label="Labels for option answers (comma-separated)")
    ui["schema"] = gr.Code(DEFAULT_SCHEMA, language="json", label="JSON schema (json technique)",
                           elem_id="pl-schema")
    ui["examples"] = gr.Textbox("Ann has 2 pens and buys 3 more. How many pens does she have? => 5", lines=2,
                                label="Few-shot examples (one 'question => answer' per line)")


def _techniques_and_sampling(ui: dict) -> None:
    ui["techniques"] = gr.CheckboxGroup(list(TECHNIQUES), value=["zero-shot", "cot", "self-consistency"],
                                        label="Techniques", elem_id="pl-techniques")
    with gr.Row():
        ui["samples"] = gr.Slider(2, 15, value=5, step=1, label="Self-consistency samples", elem_id="pl-samples")
        ui["temperature"] = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Sampling temperature (SC)",
                                      elem_id="pl-temperature")
    with gr.Row():
        ui["top_p"] = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
        ui["top_k"] = gr.Slider(0, 200, value=40, step=1, label="Top-k")
        ui["seed"] = gr.Number(0, precision=0, label="Seed")
    ui["adapter"] = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Fine-tuned adapter (optional)",
                                elem_id="pl-adapter", info="a finished Fine-tune run on its base model, instead of "
                                                           "the Prompt Lab's model (llama.cpp once exported)")
    with gr.Row():
        ui["run"] = gr.Button("Run side by side", variant="primary", elem_id="pl-run")
        ui["run_library"] = gr.Button("Run the whole library (minutes)", elem_id="pl-library-run")


def _results(ui: dict, suites: list[str]) -> None:
    ui["table"] = gr.Dataframe(headers=COLUMNS, interactive=False, label="Results", elem_id="pl-table", wrap=True)
    ui["votes"] = gr.HTML("", elem_id="pl-votes")
    ui["vote_stats"] = gr.Markdown(elem_id="pl-vote-stats")
    ui["details"] = gr.Markdown(elem_id="pl-details")
    ui["library_table"] = gr.Dataframe(headers=["technique", *suites, "seconds"], interactive=False,
                                       label="Technique x task accuracy (library run)", elem_id="pl-library-table")


def _wire(ui: dict, s: PromptServices) -> None:
    on(ui["task_pick"].change, partial(pick_task, services=s), ui, ["task_pick"],
       ["question", "kind", "expected", "labels", "examples"], api_name="on_pick")
    fair = {"turns": (s.turns, None), "concurrency_id": "generate"}
    later = {"adapter": NO_ADAPTER}  # an input added after API clients were written: they may leave it out
    on(ui["run"].click, partial(run_techniques, services=s), ui, REQUEST, SHOWN, api_name="prompt_run",
       defaults=later, **fair)
    on(ui["run_library"].click, partial(run_library, services=s), ui, ["techniques", "samples", "seed", "adapter"],
       ["library_table"], api_name="prompt_library", defaults=later, **fair)


def list_adapters_of(_v: Values, *, user: str = LOCAL_USER) -> Values:
    """The visitor's own finished generation adapters (a page load, or the tab selected after a fine-tune)."""
    return {"adapter": gr.update(choices=adapter_choices(user))}


def build_prompt_tab(cfg: StudioConfig, backends: BackendCache, turns: Turns | None = None, tab=None):
    """Widgets and events of the Prompt Lab tab (``turns``: shared with the Chat tab); returns (fn, outputs)
    to run when a page loads. Selecting the ``tab`` lists the visitor's adapters again."""
    services = PromptServices(cfg, backends, library() if LIBRARY.is_dir() else {}, turns or Turns())
    ui: dict = {}
    with gr.Row():
        with gr.Column(scale=2):
            _task(ui, services.tasks)
            _techniques_and_sampling(ui)
        with gr.Column(scale=3):
            _results(ui, list(dict.fromkeys(suite.name for suite, _ in services.tasks.values())))
    _wire(ui, services)
    if tab is not None:
        on(tab.select, list_adapters_of, ui, [], ["adapter"], api_name="prompt_adapters", show_progress="hidden")

    def page_load(request: gr.Request):
        return {ui["adapter"]: list_adapters_of({}, user=user_of(request))["adapter"]}

    return page_load, [ui["adapter"]]
