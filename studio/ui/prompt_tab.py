"""The Prompt Lab tab: techniques side by side on one task, scored, with the vote chart."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from studio.backends import BackendCache, GenerationSettings
from studio.config import StudioConfig, load_config
from studio.errors import StudioError
from studio.limits import check_json_schema
from studio.paths import CONFIGS
from studio.prompting.bench import PromptSuite, score
from studio.prompting.techniques import TECHNIQUES, run_technique
from studio.ui.guard import as_float, as_int, choice, fail, public, text

DEFAULT_SCHEMA = '{"type": "object", "properties": {"answer": {"type": "number"}}, "required": ["answer"]}'
LIBRARY = CONFIGS / "prompts"


def library() -> dict[str, tuple[PromptSuite, dict]]:
    """'suite: question' -> (suite, task) for every task in configs/prompts/."""
    out = {}
    for path in sorted(LIBRARY.glob("*.yaml")):
        suite = load_config(PromptSuite, path)
        for item in suite.tasks:
            out[f"{suite.name}: {item['q'][:70]}"] = (suite, item)
    return out


def build_prompt_tab(cfg: StudioConfig, backends: BackendCache) -> None:
    tasks = library() if LIBRARY.is_dir() else {}
    with gr.Row():
        with gr.Column(scale=2):
            pick = gr.Dropdown(["(write your own)", *tasks], value="(write your own)", label="Task library",
                               elem_id="pl-library")
            question = gr.Textbox("Tom has 3 apples and buys 4 more. How many apples does he have?", lines=3,
                                  label="Task", elem_id="pl-question")
            with gr.Row():
                kind = gr.Radio(["number", "option", "text"], value="number", label="Answer kind")
                expected = gr.Textbox("7", label="Expected answer (optional)", elem_id="pl-expected")
            labels = gr.Textbox("", label="Labels for option answers (comma-separated)")
            schema = gr.Code(DEFAULT_SCHEMA, language="json", label="JSON schema (json technique)",
                             elem_id="pl-schema")
            examples = gr.Textbox("Ann has 2 pens and buys 3 more. How many pens does she have? => 5", lines=2,
                                  label="Few-shot examples (one 'question => answer' per line)")
            techniques = gr.CheckboxGroup(list(TECHNIQUES), value=["zero-shot", "cot", "self-consistency"],
                                          label="Techniques", elem_id="pl-techniques")
            with gr.Row():
                samples = gr.Slider(2, 15, value=5, step=1, label="Self-consistency samples", elem_id="pl-samples")
                temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Sampling temperature (SC)")
            with gr.Row():
                top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=40, step=1, label="Top-k")
                seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                run = gr.Button("Run side by side", variant="primary", elem_id="pl-run")
                run_library = gr.Button("Run the whole library (minutes)", elem_id="pl-library-run")
        with gr.Column(scale=3):
            table = gr.Dataframe(headers=["technique", "answer", "correct", "tokens", "seconds", "cached"],
                                 interactive=False, label="Results", elem_id="pl-table", wrap=True)
            votes = gr.BarPlot(x="answer", y="votes", title="Self-consistency votes", elem_id="pl-votes",
                               height=240)
            vote_stats = gr.Markdown(elem_id="pl-vote-stats")
            details = gr.Markdown(elem_id="pl-details")
            library_table = gr.Dataframe(label="Technique x task accuracy (library run)", interactive=False,
                                         elem_id="pl-library-table")

    def on_pick(name):
        if name not in tasks:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        suite, item = tasks[name]
        exs = "\n".join(f"{e['q']} => {e['a']}" for e in suite.examples)
        return item["q"], suite.kind, str(item["expected"]), ", ".join(suite.labels), exs

    pick.change(on_pick, pick, [question, kind, expected, labels, examples])

    def on_run(name, q, kind_v, exp, labels_v, exs, schema_v, chosen, n, temp, tp, tk, seed_v,
               progress=gr.Progress()):  # noqa: B008
        q, exs = text(q, "the task"), text(exs, "the few-shot examples")
        labels_v, exp = text(labels_v, "the labels"), text(exp, "the expected answer")
        chosen = [choice(t, list(TECHNIQUES), "technique") for t in (chosen or [])]
        choice(kind_v, ["number", "option", "text"], "answer kind")
        n, seed_v = as_int(n, "samples"), as_int(seed_v, "seed", 0)
        temp, tp, tk = as_float(temp, "temperature"), as_float(tp, "top-p"), as_int(tk, "top-k")
        if not q.strip() or not chosen:
            raise gr.Error("Write a task and choose at least one technique.")
        suite = tasks[name][0] if name in tasks else PromptSuite(kind=kind_v, check={
            "number": "numeric", "option": "exact", "text": "contains"}[kind_v])
        pairs = [line.split("=>", 1) for line in exs.splitlines() if "=>" in line]
        schema_v = text(schema_v, "the JSON schema", "json_schema_chars")
        try:
            user_schema = check_json_schema(json.loads(schema_v)) if schema_v.strip() else None
        except (ValueError, RecursionError) as exc:
            raise gr.Error(f"The JSON schema is not valid JSON: {exc}") from None
        except StudioError as exc:
            raise fail(exc) from None
        suite = PromptSuite(**{**suite.__dict__, "kind": kind_v,
                               "labels": [x.strip() for x in labels_v.split(",") if x.strip()],
                               "examples": [{"q": a.strip(), "a": b.strip()} for a, b in pairs],
                               "schema": suite.schema or user_schema})
        task = suite.task({"q": q})
        backend = backends.get(cfg.chat.backend, cfg.chat.model, cfg.chat.base_url)
        rows, blocks, chart, stats = [], [], pd.DataFrame({"answer": [], "votes": []}), ""
        for i, technique in enumerate(chosen):
            progress((i, len(chosen)), desc=technique)
            try:
                settings = GenerationSettings(temperature=temp if technique == "self-consistency" else 0.0,
                                              top_p=tp, top_k=tk, max_tokens=256, seed=seed_v)
                res = run_technique(backend, task, technique, settings, n)
            except StudioError as exc:
                rows.append([technique, f"error: {public(str(exc))}", "", 0, 0, ""])
                continue
            ok = "" if not exp.strip() else ("yes" if score(suite, res, _expected(exp, suite)) else "no")
            rows.append([technique, res["answer"] or "(none)", ok, res["completion_tokens"], res["seconds"],
                         "yes" if res["cached"] else ""])
            prompt = "\n\n".join(f"**{m['role']}**: {m['content']}" for m in res["prompt"])
            valid = ("" if "valid_json" not in res else
                     f"\n\n**valid against the schema**: {'yes' if res['valid_json'] else 'no'}")
            blocks.append(f"#### {technique}\n{prompt}\n\n**output**: {res['output']}{valid}")
            if technique == "self-consistency":
                chart = pd.DataFrame({"answer": list(res["votes"]), "votes": list(res["votes"].values())})
                stats = (f"majority **{res['answer']}** · agreement {res['agreement']:.2f} · entropy "
                         f"{res['entropy']:.2f} bits over {int(n)} samples. Sampling several reasoning paths "
                         "and voting cancels out paths that went wrong; high agreement means the answer is stable.")
        return rows, chart, stats, "\n\n---\n\n".join(blocks)

    run.click(on_run, [pick, question, kind, expected, labels, examples, schema, techniques, samples, temperature,
                       top_p, top_k, seed], [table, votes, vote_stats, details], api_name="prompt_run")

    def on_library(chosen, n, seed_v, progress=gr.Progress()):  # noqa: B008
        from studio.prompting.bench import run_bench

        chosen = [choice(t, list(TECHNIQUES), "technique") for t in (chosen or [])]
        n, seed_v = as_int(n, "samples"), as_int(seed_v, "seed", 0)
        if not chosen:
            raise gr.Error("Choose at least one technique.")
        suites = [load_config(PromptSuite, p) for p in sorted(LIBRARY.glob("*.yaml"))]
        backend = backends.get(cfg.chat.backend, cfg.chat.model, cfg.chat.base_url)
        res = run_bench(suites, chosen, backend, GenerationSettings(temperature=0.0, max_tokens=192,
                                                                    seed=int(seed_v or 0)), int(n),
                        progress=lambda d, t, what: progress((d, t), desc=what))
        names = [s.name for s in suites]
        return pd.DataFrame([[t, *(round(row[n_], 2) for n_ in names), res["seconds"][t]]
                             for t, row in res["table"].items()], columns=["technique", *names, "seconds"])

    run_library.click(on_library, [techniques, samples, seed], library_table, api_name="prompt_library")


def _expected(text: str, suite: PromptSuite):
    if suite.check == "json_fields":
        return json.loads(text.replace("'", '"'))
    return float(text) if suite.check == "numeric" else text
