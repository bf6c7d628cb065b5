"""The Eval tab: run a suite with progress, per-case table and highlighted answers, charts, run comparison;
and a quick groundedness check of any context + answer.

Layout and wiring live in :func:`build_eval_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser:
:func:`run_eval` runs a suite (and compares it with an earlier run), :func:`refresh_runs` lists the earlier
runs and :func:`score_answer` scores one answer against a context.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.backends import BackendCache
from studio.env import LOCAL_USER, home_dir
from studio.errors import StudioError
from studio.modelstore import judge_scorer
from studio.paths import CONFIGS, Roots
from studio.ui.guard import choice, fail, public, text
from studio.ui.wiring import Values, on

SCORERS = ["judge", "encoder", "lexical", "embedding", "llm"]  # nli:PATH is for the CLI (a model folder)
SUITES = CONFIGS / "eval"
NO_BASELINE = "(none)"
REQUEST = ["suite", "upload", "overrides", "baseline"]  # /eval_run's parameters, in this order
SHOWN = ["summary", "compared", "plot", "cases", "answers", "baseline"]


def suite_files() -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(SUITES.glob("*.yaml"))} if SUITES.is_dir() else {}


def runs_dir() -> Path:
    return home_dir() / "eval"


def earlier_runs(user: str = LOCAL_USER) -> list[str]:
    """``user``'s run folders with a report, newest first."""
    from eval.suite import run_owner

    if not runs_dir().is_dir():
        return []
    runs = [p for p in runs_dir().iterdir() if (p / "report.json").is_file() and run_owner(p) == user]
    return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


def answer_html(case: dict) -> str:
    sentences = case.get("sentences") or []
    if not sentences:
        return html.escape(case["answer"])
    return " ".join(f"<span class='{'supported' if s['supported'] else 'unsupported'}' "
                    f"title='support {s['score']:.2f}'>{html.escape(s['text'])}</span>" for s in sentences)


def cases_html(report: dict) -> str:
    rows = []
    for c in report["cases"]:
        scores = " · ".join(f"{m} {v:.2f}" for m, v in c["metrics"].items())
        rows.append(f"<div class='eval-case' id='eval-case-{html.escape(c['id'])}'><b>{html.escape(c['id'])}</b>"
                    f" — {html.escape(c['question'])}<div class='eval-answer'>{answer_html(c)}</div>"
                    f"<small>{scores}</small></div>")
    return ("<p>Answer sentences the context does not support are shaded red; hover for the support score.</p>"
            + "".join(rows))


def case_check(case: dict, thresholds: dict) -> str:
    """Why a case is marked: its own values below the suite's thresholds (the suite passes on the means)."""
    low = [f"{m} {case['metrics'].get(m, 0.0):.2f} < {thresholds[m]:g}" for m in case.get("failed", [])
           if m in thresholds]
    return "below: " + "; ".join(low) if low else "meets every threshold"


def table(report: dict) -> pd.DataFrame:
    """One row per case: its values, its own check against the thresholds, its unsupported sentences."""
    return pd.DataFrame([{"case": c["id"], **{m: round(v, 3) for m, v in c["metrics"].items()},
                          "this case": case_check(c, report["thresholds"]),
                          "unsupported sentences": " | ".join(c["unsupported"])} for c in report["cases"]])


def summary_md(report: dict) -> str:
    """What passed (the suite's mean thresholds) said apart from what a case's own check says."""
    cases = report["cases"]
    marked = sum(bool(c.get("failed")) for c in cases)
    missed = report["threshold_failures"]
    verdict = ("Suite passed: every metric's mean meets its threshold" if report["passed"] else
               f"Suite failed: {', '.join(missed)} below {'its' if len(missed) == 1 else 'their'} threshold")
    lines = [f"### {verdict}", f"{report['suite']} · {len(cases)} cases · {report['seconds']} s", "",
             f"Run folder: `{public(report.get('run_dir', ''))}`", "",
             "The suite is judged on each metric's **mean** over the cases. Each case is also checked on its own "
             f"values against the same thresholds: **{marked} of {len(cases)}** cases fall below one "
             "(column *this case*); a suite can pass with some weak cases.", "",
             "| metric | mean | threshold | suite |", "|---|---:|---:|---|"]
    for m, v in report["metrics"].items():
        th = report["thresholds"].get(m)
        state = "" if th is None else ("below" if m in missed else "met")
        lines.append(f"| {m} | {v:.3f} | {'' if th is None else th} | {state} |")
    return "\n".join(lines)


def _means_axis(ax, report: dict, baseline: dict | None) -> None:
    """Suite means as bars (beside an earlier run's), with the thresholds as red dashes."""
    import numpy as np

    names = list(report["metrics"])
    x = np.arange(len(names))
    width = 0.38 if baseline else 0.6
    if baseline:
        ax.bar(x - width / 2, [baseline["metrics"].get(n, 0) for n in names], width, label="earlier run",
               color="#bbb")
    ax.bar(x + (width / 2 if baseline else 0), [report["metrics"][n] for n in names], width, label="this run",
           color="#3b7dd8")
    for i, n in enumerate(names):
        if n in report["thresholds"]:
            ax.hlines(report["thresholds"][n], i - 0.45, i + 0.45, colors="#c00", linestyles="--")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("suite means (red dashes: thresholds)", fontsize=9)
    if baseline:
        ax.legend(fontsize=7)


def metrics_plot(report: dict, baseline: dict | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    _means_axis(ax1, report, baseline)
    ids = [c["id"] for c in report["cases"]]
    first = next(iter(report["metrics"]))
    ax2.barh(ids, [c["metrics"][first] for c in report["cases"]], color="#3b7dd8")
    ax2.set_xlim(0, 1)
    ax2.invert_yaxis()
    ax2.tick_params(labelsize=7)
    ax2.set_title(f"{first} per case", fontsize=9)
    fig.tight_layout()
    return fig


def comparison_md(report: dict, baseline_name: str, comparison: dict) -> str:
    regs = comparison["regressions"]
    head = f"**Against {baseline_name}: {len(regs)} regression(s)** (tolerance {comparison['tolerance']})"
    if comparison["improved"]:
        head += f"; improved: {', '.join(comparison['improved'])}"
    body = [f"- {r['metric']}{' · ' + r['case'] if r['case'] else ' (suite mean)'}: {r['baseline']} → {r['now']}"
            for r in regs]
    return "\n".join([head, *body])


@dataclass
class EvalServices:
    """What the Eval tab's handlers work with: where an uploaded suite and the paths it names may be
    (``roots``), the model cache (checks a suite's endpoint) and the bundled suites (name -> file)."""

    roots: Roots
    backends: BackendCache
    suites: dict[str, str] = field(default_factory=dict)


def _no_progress(*_args, **_kwargs) -> None:
    pass


def _baseline_choices(user: str) -> dict:
    return gr.update(choices=[NO_BASELINE, *earlier_runs(user)])


# --- handlers ------------------------------------------------------------------------------------------
def _run(v: Values, path: str, s: EvalServices, progress, user: str) -> tuple[dict, Path]:
    """(report, run folder) of the suite at ``path`` with the overrides; every path confined to the roots."""
    from eval.suite import load_suite, new_run_dir, run_suite

    try:
        suite = load_suite(path, text(v["overrides"], "the overrides").split(), roots=s.roots)
        if suite.backend == "openai" or suite.base_url:
            suite.base_url = s.backends.check_url(suite.base_url)
        out = new_run_dir(suite.name, user)
        progress(0, desc="starting")
        report = run_suite(suite, out, progress=lambda i, n, what: progress((i, n), desc=what, unit="cases"))
    except StudioError as exc:
        raise fail(exc) from None
    return report, out


def run_eval(v: Values, *, services: EvalServices, progress=_no_progress, user: str = LOCAL_USER) -> Values:
    """Run the picked (or uploaded) suite: summary, comparison with an earlier run, plot, case table,
    highlighted answers, and the earlier-runs list (with this run in it)."""
    from eval.suite import compare, load_report, write_reports

    base = v["baseline"]
    path = v["upload"] if v["upload"] else services.suites.get(v["suite"])
    if not path:
        raise gr.Error("Pick a suite or upload a suite file.")
    if base not in (None, NO_BASELINE):
        choice(base, earlier_runs(user), "the earlier run")
    report, out = _run(v, path, services, progress, user)
    base_report, note = None, ""
    if base and base != NO_BASELINE:
        base_report = load_report(runs_dir() / base)
        report["comparison"] = compare(report, base_report)
        write_reports(report, out)
        note = comparison_md(report, base, report["comparison"])
    return {"summary": summary_md(report), "compared": note, "plot": metrics_plot(report, base_report),
            "cases": table(report), "answers": cases_html(report), "baseline": _baseline_choices(user)}


def refresh_runs(_v: Values, *, user: str = LOCAL_USER) -> Values:
    """``user``'s earlier runs, reread from $STUDIO_HOME/eval/."""
    return {"baseline": _baseline_choices(user)}


def score_answer(v: Values, *, chat_cfg=None) -> Values:
    """One answer's groundedness in one context: the score, its sentences shaded, the scorer's details. The
    ``llm`` scorer asks the judge role's model (the Models tab chooses it; ``chat_cfg`` holds it)."""
    from eval.groundedness import get_scorer

    context = text(v["context"], "the context", "prompt_chars")
    answer = text(v["answer"], "the answer")
    scorer = choice(v["scorer"], SCORERS, "scorer")
    if scorer == "llm" and chat_cfg is not None:
        scorer = judge_scorer(chat_cfg)
    if not context.strip() or not answer.strip():
        raise gr.Error("Give both a context and an answer.")
    try:
        g = get_scorer(scorer).score(context, answer)
    except StudioError as exc:
        raise fail(exc) from None
    case = {"answer": answer, "sentences": [s.__dict__ for s in g.sentences]}
    return {"grounded": f"<p class='grounded'>groundedness <b>{g.score:.2f}</b> · {len(g.unsupported)} of "
                        f"{len(g.sentences)} sentences not supported</p><div class='eval-answer'>"
                        f"{answer_html(case)}</div><pre>{html.escape(json.dumps(g.to_dict(), indent=1)[:3000])}</pre>"}


# --- layout ---------------------------------------------------------------------------------------------
def _suite_inputs(ui: dict, suites: dict[str, str]) -> None:
    ui["suite"] = gr.Dropdown(list(suites), value=next(iter(suites), None), label="Suite (configs/eval/)",
                              elem_id="eval-suite")
    ui["upload"] = gr.File(label="…or a suite file of your own (.yaml)", file_types=[".yaml", ".yml"],
                           elem_id="eval-upload")
    ui["overrides"] = gr.Textbox("", label="Overrides (key=value, space-separated)", placeholder="seed=1 k=6",
                                 elem_id="eval-overrides")
    ui["baseline"] = gr.Dropdown([NO_BASELINE], value=NO_BASELINE,  # the visitor's own runs: on page load
                                 label="Compare with an earlier run", elem_id="eval-baseline",
                                 allow_custom_value=False)
    with gr.Row():
        ui["run"] = gr.Button("Run suite", variant="primary", elem_id="eval-run")
        ui["refresh"] = gr.Button("Refresh runs", elem_id="eval-refresh")


def _results(ui: dict) -> None:
    ui["summary"] = gr.Markdown("Pick a suite and run it. Reports land in `$STUDIO_HOME/eval/`.",
                                elem_id="eval-summary")
    ui["compared"] = gr.Markdown("", elem_id="eval-compare")
    ui["plot"] = gr.Plot(label="Metrics", elem_id="eval-plot")


def _groundedness(ui: dict) -> None:
    with gr.Accordion("Check one answer's groundedness", open=False):
        with gr.Row():
            ui["context"] = gr.Textbox(lines=5, label="Context", elem_id="eval-g-context")
            ui["answer"] = gr.Textbox(lines=5, label="Answer", elem_id="eval-g-answer")
        with gr.Row():
            ui["scorer"] = gr.Dropdown(SCORERS, value="judge", label="Scorer",
                                       info="llm asks the judge model the Models tab chose")
            ui["score"] = gr.Button("Score", elem_id="eval-g-run")
        ui["grounded"] = gr.HTML(elem_id="eval-g-out")


def _wire(ui: dict, s: EvalServices, chat_cfg=None) -> None:
    on(ui["run"].click, partial(run_eval, services=s), ui, REQUEST, SHOWN, api_name="eval_run",
       concurrency_limit=1)
    on(ui["refresh"].click, refresh_runs, ui, [], ["baseline"], api_name="eval_refresh")
    on(ui["score"].click, partial(score_answer, chat_cfg=chat_cfg), ui, ["context", "answer", "scorer"], ["grounded"],
       api_name="groundedness")


def build_eval_tab(roots: Roots, backends: BackendCache, tab=None, chat_cfg=None) -> None:
    """``roots``: where an uploaded suite and the paths it names may be; ``backends`` checks its endpoint;
    ``chat_cfg`` names the judge role's model for the ``llm`` scorer. Selecting the ``tab`` lists the earlier
    runs again (the CLI may have added some)."""
    services = EvalServices(roots, backends, suite_files())
    ui: dict = {}
    with gr.Row():
        with gr.Column(scale=2):
            _suite_inputs(ui, services.suites)
        with gr.Column(scale=3):
            _results(ui)
    ui["cases"] = gr.Dataframe(label="Cases: each one's values and its own check", elem_id="eval-table", wrap=True,
                               max_height=520)
    ui["answers"] = gr.HTML(elem_id="eval-answers")
    _groundedness(ui)
    _wire(ui, services, chat_cfg)
    if tab is not None:
        on(tab.select, refresh_runs, ui, [], ["baseline"], api_name="eval_lists", show_progress="hidden")
