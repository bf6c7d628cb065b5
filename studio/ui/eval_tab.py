"""The Eval tab: run a suite with progress, per-case table and highlighted answers, charts, run comparison;
and a quick groundedness check of any context + answer."""

from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from studio.backends import BackendCache
from studio.env import home_dir
from studio.errors import StudioError
from studio.paths import CONFIGS, Roots
from studio.ui.guard import choice, fail, public, text

SCORERS = ["judge", "encoder", "lexical", "embedding", "llm"]  # nli:PATH is for the CLI (a model folder)
SUITES = CONFIGS / "eval"


def suite_files() -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(SUITES.glob("*.yaml"))} if SUITES.is_dir() else {}


def runs_dir() -> Path:
    return home_dir() / "eval"


def earlier_runs() -> list[str]:
    """Run folders with a report, newest first."""
    if not runs_dir().is_dir():
        return []
    runs = [p for p in runs_dir().iterdir() if (p / "report.json").is_file()]
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


def table(report: dict) -> pd.DataFrame:
    return pd.DataFrame([{"case": c["id"], **c["metrics"], "passed": c["passed"],
                          "unsupported": " | ".join(c["unsupported"])} for c in report["cases"]])


def summary_md(report: dict) -> str:
    lines = [f"### {'✅ PASSED' if report['passed'] else '❌ FAILED'} · {report['suite']} · "
             f"{len(report['cases'])} cases · {report['seconds']} s",
             f"Run folder: `{public(report.get('run_dir', ''))}`", "", "| metric | mean | threshold |",
             "|---|---:|---:|"]
    for m, v in report["metrics"].items():
        th = report["thresholds"].get(m)
        lines.append(f"| {m} | {v:.3f}{' ✗' if m in report['threshold_failures'] else ''} | "
                     f"{'' if th is None else th} |")
    return "\n".join(lines)


def metrics_plot(report: dict, baseline: dict | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(report["metrics"])
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    width = 0.38 if baseline else 0.6
    if baseline:
        ax1.bar(x - width / 2, [baseline["metrics"].get(n, 0) for n in names], width, label="earlier run",
                color="#bbb")
    ax1.bar(x + (width / 2 if baseline else 0), [report["metrics"][n] for n in names], width, label="this run",
            color="#3b7dd8")
    for i, n in enumerate(names):
        if n in report["thresholds"]:
            ax1.hlines(report["thresholds"][n], i - 0.45, i + 0.45, colors="#c00", linestyles="--")
    ax1.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax1.set_ylim(0, 1.05)
    ax1.set_title("suite means (red dashes: thresholds)", fontsize=9)
    if baseline:
        ax1.legend(fontsize=7)
    ids = [c["id"] for c in report["cases"]]
    first = names[0]
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


def build_eval_tab(roots: Roots, backends: BackendCache) -> None:
    """``roots``: where an uploaded suite and the paths it names may be; ``backends`` checks its endpoint."""
    suites = suite_files()
    with gr.Row():
        with gr.Column(scale=2):
            suite = gr.Dropdown(list(suites), value=next(iter(suites), None), label="Suite (configs/eval/)",
                                elem_id="eval-suite")
            upload = gr.File(label="…or a suite file of your own (.yaml)", file_types=[".yaml", ".yml"],
                             elem_id="eval-upload")
            overrides = gr.Textbox("", label="Overrides (key=value, space-separated)", placeholder="seed=1 k=6",
                                   elem_id="eval-overrides")
            baseline = gr.Dropdown(["(none)", *earlier_runs()], value="(none)", label="Compare with an earlier run",
                                   elem_id="eval-baseline", allow_custom_value=False)
            with gr.Row():
                run = gr.Button("Run suite", variant="primary", elem_id="eval-run")
                refresh = gr.Button("Refresh runs", elem_id="eval-refresh")
        with gr.Column(scale=3):
            summary = gr.Markdown("Pick a suite and run it. Reports land in `$STUDIO_HOME/eval/`.",
                                  elem_id="eval-summary")
            compared = gr.Markdown("", elem_id="eval-compare")
            plot = gr.Plot(label="Metrics", elem_id="eval-plot")
    cases = gr.Dataframe(label="Cases", elem_id="eval-table", wrap=True)
    answers = gr.HTML(elem_id="eval-answers")

    with gr.Accordion("Check one answer's groundedness", open=False):
        with gr.Row():
            g_context = gr.Textbox(lines=5, label="Context", elem_id="eval-g-context")
            g_answer = gr.Textbox(lines=5, label="Answer", elem_id="eval-g-answer")
        with gr.Row():
            g_scorer = gr.Dropdown(SCORERS, value="judge", label="Scorer")
            g_run = gr.Button("Score", elem_id="eval-g-run")
        g_out = gr.HTML(elem_id="eval-g-out")

    def do_run(name, file, over, base, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        from eval.suite import compare, load_report, load_suite, new_run_dir, run_suite, write_reports

        path = file if file else suites.get(name)
        if not path:
            raise gr.Error("Pick a suite or upload a suite file.")
        if base not in (None, "(none)"):
            choice(base, earlier_runs(), "the earlier run")
        try:
            s = load_suite(path, text(over, "the overrides").split(), roots=roots)
            if s.backend == "openai" or s.base_url:
                s.base_url = backends.check_url(s.base_url)
            out = new_run_dir(s.name)
            progress(0, desc="starting")
            report = run_suite(s, out, progress=lambda i, n, what: progress((i, n), desc=what, unit="cases"))
        except StudioError as exc:
            raise fail(exc) from None
        base_report, note = None, ""
        if base and base != "(none)":
            base_report = load_report(runs_dir() / base)
            report["comparison"] = compare(report, base_report)
            write_reports(report, out)
            note = comparison_md(report, base, report["comparison"])
        return (summary_md(report), note, metrics_plot(report, base_report), table(report), cases_html(report),
                gr.update(choices=["(none)", *earlier_runs()]))

    run.click(do_run, [suite, upload, overrides, baseline], [summary, compared, plot, cases, answers, baseline],
              api_name="eval_run",
              concurrency_limit=1)
    refresh.click(lambda: gr.update(choices=["(none)", *earlier_runs()]), None, baseline)

    def do_score(context, answer, scorer):
        from eval.groundedness import get_scorer

        context = text(context, "the context", "prompt_chars")
        answer = text(answer, "the answer")
        choice(scorer, SCORERS, "scorer")
        if not context.strip() or not answer.strip():
            raise gr.Error("Give both a context and an answer.")
        try:
            g = get_scorer(scorer).score(context, answer)
        except StudioError as exc:
            raise fail(exc) from None
        case = {"answer": answer, "sentences": [s.__dict__ for s in g.sentences]}
        return (f"<p class='grounded'>groundedness <b>{g.score:.2f}</b> · {len(g.unsupported)} of "
                f"{len(g.sentences)} sentences not supported</p><div class='eval-answer'>{answer_html(case)}</div>"
                f"<pre>{html.escape(json.dumps(g.to_dict(), indent=1)[:3000])}</pre>")

    g_run.click(do_score, [g_context, g_answer, g_scorer], g_out, api_name="groundedness")
