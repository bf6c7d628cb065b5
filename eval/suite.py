"""Eval suites: YAML (cases + the pipeline to run + metrics + thresholds), run offline and deterministically.

>>> suite = load_suite("configs/eval/rag_smoke.yaml")
>>> report = run_suite(suite, out_dir)         # report.json, report.md, report.html, config.yaml
>>> report["passed"], report["metrics"]

Pipelines:
- ``rag``: ingest ``documents`` into ``collection`` (incrementally), ask each case's question
  through the RAG chain, score the answer against the retrieved chunks.
- ``prompt``: run each case's question through a Prompt Lab ``technique``; score with checks.
- ``answers``: no model; each case brings its ``answer`` and ``contexts`` (score answers made elsewhere).

A case: ``{id?, question, reference?, expected?, check?, answer?, contexts?}``. Cases come from
``cases`` and/or ``dataset`` (JSONL, relative to the suite file). Thresholds are minimums on
the suite mean of a metric; a run passes when every threshold holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from eval import metrics as M
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.limits import check_int
from studio.limits import current as current_limits
from studio.paths import Roots, check_name, unique_run_dir
from studio.registry import known_names
from studio.schema import config_class

PIPELINES = ("rag", "prompt", "answers")


@config_class
@dataclass
class EvalSuite:
    """An eval suite (``configs/eval/*.yaml``)."""

    name: str = "suite"
    description: str = ""
    pipeline: Literal["rag", "prompt", "answers"] = field(default="rag", metadata={"help": "rag | prompt | answers"})
    seed: int = 0
    metrics: list[str] = field(default_factory=lambda: ["groundedness", "answer_relevance"])
    thresholds: dict[str, float] = field(default_factory=dict)
    scorer: str = field(default="judge", metadata={"help": "groundedness scorer: judge | lexical | embedding | llm"})
    # rag
    collection: str = "eval"
    documents: list[str] = field(default_factory=list)
    style: Literal["hybrid", "generative", "extractive"] = "hybrid"
    k: int = 4
    # model (rag, prompt, rubric)
    backend: Literal["llamacpp", "hf", "openai"] = "llamacpp"
    model: str | None = None
    base_url: str | None = None
    max_tokens: int = 120
    # prompt
    technique: str = "zero-shot"
    kind: Literal["number", "option", "text"] = "text"
    check: str = "contains"
    rubric: str = ""
    # cases
    dataset: str | None = None
    cases: list[dict] = field(default_factory=list)
    source_path: str | None = field(default=None, metadata={"help": "set by load_suite"})

    def check_valid(self) -> EvalSuite:
        check_name(self.name, "suite name")  # it names the run folder
        lim = current_limits()
        check_int("k", self.k, 1, lim.retrieval_k, "retrieval_k")
        check_int("max_tokens", self.max_tokens, 1, lim.max_new_tokens, "max_new_tokens")
        if self.pipeline not in PIPELINES:
            raise StudioError(f"unknown pipeline {self.pipeline!r}; choose one of: {', '.join(PIPELINES)}")
        allowed = M.RAG_METRICS + M.PROMPT_METRICS
        for m in [*self.metrics, *self.thresholds]:
            if m not in allowed:
                raise StudioError(f"unknown metric {m!r}; choose from: {', '.join(allowed)}")
        missing = set(self.thresholds) - set(self.metrics)
        if missing:
            raise StudioError(f"thresholds name metrics the suite does not compute: {', '.join(sorted(missing))}")
        cases = self.all_cases()
        if not cases:
            raise StudioError(f"suite {self.name!r} has no cases; add `cases:` or a `dataset:` JSONL file")
        if len(cases) > lim.eval_cases:
            raise StudioError(f"suite {self.name!r} has {len(cases):,} cases; the limit is {lim.eval_cases:,} "
                              "(limits.eval_cases)")
        return self

    def confine(self, roots: Roots) -> EvalSuite:
        """Refuse what a suite sent through the web UI may not read: documents, a dataset, a model
        file or an ``nli:`` scorer folder outside ``roots`` (the same refusal whether they exist or not)."""
        self.documents = [str(roots.resolve(self._local(d), "suite document")) for d in self.documents]
        if self.dataset:
            self.dataset = str(roots.resolve(self._local(self.dataset), "suite dataset"))
        if self.model and self.model not in known_names() and self.backend != "openai":
            self.model = str(roots.resolve(self.model, "suite model"))
        for prefix in ("nli:", "encoder:"):
            if self.scorer.startswith(prefix):
                self.scorer = prefix + str(roots.resolve(self.scorer.removeprefix(prefix), "scorer model"))
        return self

    def _local(self, path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else self.base_dir() / path

    def base_dir(self) -> Path:
        return Path(self.source_path).parent if self.source_path else Path.cwd()

    def all_cases(self) -> list[dict]:
        cases = [dict(c) for c in self.cases]
        if self.dataset:
            path = self._local(self.dataset)
            if not path.is_file():
                raise StudioError(f"dataset {path} not found")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        cases.append(json.loads(line))
                    except ValueError as exc:
                        raise StudioError(f"{path}:{n}: not JSON ({exc})") from None
        for i, c in enumerate(cases, 1):
            c.setdefault("id", f"case-{i}")
            if "question" not in c and "q" in c:
                c["question"] = c.pop("q")
            if "question" not in c and self.pipeline != "answers":
                raise StudioError(f"case {c['id']} has no question")
        return cases


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), roots: Roots | None = None) -> EvalSuite:
    """A checked suite from its YAML and ``key=value`` overrides. With ``roots`` (the web UI), the suite
    file and every path it names must lie inside them (:meth:`EvalSuite.confine`)."""
    from studio.config import load_config

    if roots is not None:
        path = roots.resolve(path, "suite file")
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"suite file {path.name} not found")
    suite = load_config(EvalSuite, path, overrides)
    suite.source_path = str(path.resolve())
    if roots is not None:
        suite.confine(roots)
    return suite.check_valid()


# --- running ---------------------------------------------------------------------------------------------
class _Runner:
    def __init__(self, suite: EvalSuite):
        self.suite = suite
        self._backend = None
        self._embedder = None
        self._chain = None

    def backend(self):
        if self._backend is None:
            from studio.backends import load_backend

            s = self.suite
            self._backend = load_backend(s.backend, s.model, base_url=s.base_url) if s.base_url else load_backend(
                s.backend, s.model)
        return self._backend

    def embedder(self):
        if self._embedder is None:
            from ingest.embeddings import MiniLMEmbeddings

            self._embedder = MiniLMEmbeddings()
        return self._embedder

    def chain(self):
        if self._chain is None:
            from ingest.config import IngestConfig
            from ingest.pipeline import Ingestor
            from studio.backends.base import GenerationSettings
            from studio.rag.chain import RagChain
            from studio.rag.config import RagConfig, RetrievalConfig
            from studio.rag.retriever import Retriever

            s = self.suite
            ingestor = Ingestor(IngestConfig())
            docs = [str(s._local(p)) for p in s.documents]
            if docs:
                result = ingestor.ingest(docs, s.collection)
                failed = [f for f in result.files if f.status == "failed"]
                if failed:
                    raise StudioError(f"could not ingest {failed[0].source}: {failed[0].error}")
            cfg = RagConfig(retrieval=RetrievalConfig(k=s.k), style=s.style, max_tokens=s.max_tokens,
                            groundedness_scorer=s.scorer)
            backend = None if s.style == "extractive" else self.backend()
            settings = GenerationSettings(temperature=0.0, max_tokens=s.max_tokens, seed=s.seed)
            # the suite's own delimiter key: the same suite answers the same on every machine
            self._chain = RagChain(Retriever(ingestor, s.collection, cfg.retrieval), backend, cfg, settings,
                                   delimiter_key=f"eval-{s.seed}".encode())
        return self._chain

    def answer(self, case: dict) -> tuple[str, list[str], dict]:
        """(answer, contexts, extra fields for the report)."""
        s = self.suite
        if s.pipeline == "answers":
            if "answer" not in case:
                raise StudioError(f"case {case['id']}: the answers pipeline needs `answer` (and `contexts`)")
            return case["answer"], list(case.get("contexts") or []), {}
        if s.pipeline == "rag":
            res = self.chain().ask(case["question"])
            scored_text = res.scored_text or res.answer
            return res.answer, [h.text for h in res.hits], {
                "scored_text": scored_text, "answerable": res.answerable,
                "citations": [{"n": c.n, "source": c.source, "page": c.page} for c in res.citations],
                "sources": [{"source": h.source, "page": h.page} for h in res.hits]}
        from studio.backends.base import GenerationSettings
        from studio.prompting.techniques import Task, run_technique

        task = Task(case["question"], case.get("kind", s.kind), list(case.get("labels", [])),
                    list(case.get("examples", [])))
        res = run_technique(self.backend(), task, s.technique,
                            GenerationSettings(temperature=0.0, max_tokens=256, seed=s.seed))
        answer = res["answer"] if res["answer"] is not None else res["output"]
        return str(answer), [], {"output": res["output"]}

    def score(self, case: dict, answer: str, contexts: list[str], scored_text: str) -> tuple[dict, dict]:
        s = self.suite
        values: dict[str, float] = {}
        detail: dict = {}
        for m in s.metrics:
            if m == "groundedness":
                g = M.get_scorer(s.scorer).score("\n\n".join(contexts), scored_text) if contexts else None
                values[m] = g.score if g else 0.0
                detail["sentences"] = [x.__dict__ for x in g.sentences] if g else []
            elif m == "answer_relevance":
                values[m] = M.answer_relevance(case.get("question", ""), scored_text, self.embedder())
            elif m in ("context_precision", "context_recall"):
                ref = case.get("reference")
                if not ref:
                    raise StudioError(f"case {case['id']}: {m} needs a `reference` answer")
                fn = M.context_precision if m == "context_precision" else M.context_recall
                values[m] = fn(ref, contexts, s.scorer) if contexts else 0.0
            elif m == "rubric":
                criteria = case.get("rubric") or s.rubric
                if not criteria:
                    raise StudioError(f"case {case['id']}: the rubric metric needs `rubric` text")
                values[m] = M.rubric(case.get("question", ""), answer, criteria, self.backend(), s.seed)
            else:  # an answer check
                if "expected" not in case and m != "json_valid":
                    raise StudioError(f"case {case['id']}: the {m} check needs `expected`")
                values[m] = M.prompt_check(m, answer, case.get("expected"), case.get("options"))
        return {k: round(float(v), 4) for k, v in values.items()}, detail


def run_suite(suite: EvalSuite, out_dir: str | Path | None = None,
              progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run every case, score it, write the reports into ``out_dir``; return the report."""
    from studio.config import save_config

    suite.check_valid()
    cases = suite.all_cases()
    runner = _Runner(suite)
    start = time.perf_counter()
    results = []
    for i, case in enumerate(cases):
        if progress:
            progress(i, len(cases), case.get("question", case["id"])[:60])
        t0 = time.perf_counter()
        answer, contexts, extra = runner.answer(case)
        values, detail = runner.score(case, answer, contexts, extra.pop("scored_text", answer))
        failed = [m for m, lo in suite.thresholds.items() if values.get(m, 0.0) < lo]
        results.append({"id": case["id"], "question": case.get("question", ""), "answer": answer,
                        "reference": case.get("reference"), "expected": case.get("expected"),
                        "metrics": values, "passed": not failed, "failed": failed,
                        "unsupported": [s["text"] for s in detail.get("sentences", []) if not s["supported"]],
                        **detail, **extra, "seconds": round(time.perf_counter() - t0, 3)})
    if progress:
        progress(len(cases), len(cases), "done")
    means = {m: round(float(np.mean([r["metrics"][m] for r in results])), 4) for m in suite.metrics}
    failures = {m: {"value": means[m], "threshold": lo} for m, lo in suite.thresholds.items() if means[m] < lo}
    report = {"suite": suite.name, "pipeline": suite.pipeline, "seed": suite.seed, "scorer": suite.scorer,
              "metrics": means, "thresholds": dict(suite.thresholds), "threshold_failures": failures,
              "passed": not failures, "cases": results, "seconds": round(time.perf_counter() - start, 2)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(suite, out / "config.yaml")
        write_reports(report, out)
        report["run_dir"] = str(out)
    return report


def new_run_dir(name: str, owner: str = LOCAL_USER) -> Path:
    """A fresh run folder under $STUDIO_HOME/eval/: NAME-YYYYmmdd-HHMMSS[-n], never an existing one, with the
    account that runs it in its ``owner`` file (a shared studio lists each account only its own runs)."""
    out = unique_run_dir("eval", name=name)
    out.mkdir(parents=True)
    (out / "owner").write_text(owner)
    return out


def run_owner(run_dir: Path) -> str:
    """Whose run this is (a run from before workspaces, with no ``owner`` file, is the local user's)."""
    try:
        return (Path(run_dir) / "owner").read_text().strip() or LOCAL_USER
    except OSError:
        return LOCAL_USER


def apply_fail_under(report: dict, floor: float) -> dict:
    """Every metric's mean must reach ``floor`` (on top of the suite's own thresholds)."""
    for m, v in report["metrics"].items():
        if v < floor and m not in report["threshold_failures"]:
            report["threshold_failures"][m] = {"value": v, "threshold": floor}
    report["passed"] = not report["threshold_failures"]
    return report


def compare(report: dict, baseline: dict, tolerance: float = 0.02) -> dict:
    """Metrics and cases where ``report`` is worse than ``baseline`` by more than ``tolerance``."""
    regressions = []
    for m, old in baseline.get("metrics", {}).items():
        new = report["metrics"].get(m)
        if new is not None and new < old - tolerance:
            regressions.append({"metric": m, "case": None, "baseline": old, "now": new})
    old_cases = {c["id"]: c for c in baseline.get("cases", [])}
    for case in report["cases"]:
        before = old_cases.get(case["id"])
        if not before:
            continue
        for m, new in case["metrics"].items():
            old = before["metrics"].get(m)
            if old is not None and new < old - tolerance:
                regressions.append({"metric": m, "case": case["id"], "baseline": old, "now": new})
    improved = [m for m, old in baseline.get("metrics", {}).items()
                if report["metrics"].get(m, -1) > old + tolerance]
    return {"baseline_suite": baseline.get("suite"), "tolerance": tolerance, "regressions": regressions,
            "improved": improved}


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise StudioError(f"no eval report at {path}")
    return json.loads(path.read_text())


# --- reports -------------------------------------------------------------------------------------------
def write_reports(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown(report))
    (out / "report.html").write_text(html(report))


def markdown(report: dict) -> str:
    lines = [f"# Eval: {report['suite']}", "",
             f"**{'PASSED' if report['passed'] else 'FAILED'}** · pipeline {report['pipeline']} · seed "
             f"{report['seed']} · scorer {report['scorer']} · {len(report['cases'])} cases · {report['seconds']} s",
             "", "| metric | mean | threshold |", "|---|---:|---:|"]
    for m, v in report["metrics"].items():
        th = report["thresholds"].get(m, report["threshold_failures"].get(m, {}).get("threshold"))
        mark = " ✗" if m in report["threshold_failures"] else ""
        lines.append(f"| {m} | {v:.3f}{mark} | {'' if th is None else th} |")
    if report.get("comparison"):
        regs = report["comparison"]["regressions"]
        lines += ["", f"## Against the baseline: {len(regs)} regression(s)"]
        lines += [f"- {r['metric']}{' · ' + r['case'] if r['case'] else ''}: {r['baseline']} → {r['now']}"
                  for r in regs]
    lines += ["", "## Cases", "", "| case | " + " | ".join(report["metrics"]) + " | unsupported sentences |",
              "|---|" + "---:|" * len(report["metrics"]) + "---|"]
    for c in report["cases"]:
        cells = " | ".join(f"{c['metrics'][m]:.2f}" for m in report["metrics"])
        unsupported = "; ".join(c["unsupported"]).replace("|", "\\|")[:200]
        lines.append(f"| {c['id']} | {cells} | {unsupported} |")
    return "\n".join(lines) + "\n"


def html(report: dict) -> str:
    from html import escape

    rows = []
    for c in report["cases"]:
        sentences = c.get("sentences") or []
        answer = " ".join(
            f'<span class="{"ok" if s["supported"] else "bad"}" title="{s["score"]:.2f}">{escape(s["text"])}</span>'
            for s in sentences) or escape(c["answer"])
        cells = "".join(f"<td>{c['metrics'][m]:.2f}</td>" for m in report["metrics"])
        rows.append(f"<tr class='{'pass' if c['passed'] else 'fail'}'><td>{escape(c['id'])}</td>"
                    f"<td>{escape(c['question'])}</td><td>{answer}</td>{cells}</tr>")
    head = "".join(f"<th>{escape(m)}</th>" for m in report["metrics"])
    summary = "".join(f"<li>{escape(m)}: <b>{v:.3f}</b></li>" for m, v in report["metrics"].items())
    return f"""<!doctype html><meta charset="utf-8"><title>Eval: {escape(report['suite'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}} .bad{{background:#ffd6d6}} .ok{{background:#e3f7e3}}
tr.fail td:first-child{{color:#b00}}
</style><h1>Eval: {escape(report['suite'])} — {'PASSED' if report['passed'] else 'FAILED'}</h1>
<ul>{summary}</ul><p>Unsupported sentences are shaded red (groundedness scorer: {escape(report['scorer'])}).</p>
<table><tr><th>case</th><th>question</th><th>answer</th>{head}</tr>{''.join(rows)}</table>
"""


def junit(report: dict) -> str:
    """JUnit XML: one test per case and one per suite metric; what fails is what made the run fail."""
    from xml.sax.saxutils import escape, quoteattr

    tests = []
    for c in report["cases"]:
        # a case fails only on a metric whose suite mean missed its threshold, so JUnit agrees with the exit code
        below = [m for m in c["failed"] if m in report["threshold_failures"]]
        scores = ", ".join(f"{m}={v}" for m, v in c["metrics"].items())
        body = f"<system-out>{escape(scores)}</system-out>"
        if below:
            msg = ", ".join(f"{m}={c['metrics'][m]} < {report['thresholds'][m]}" for m in below)
            body = f"<failure message={quoteattr(msg)}/>" + body
        tests.append(f"<testcase classname={quoteattr('eval.' + report['suite'])} name={quoteattr(c['id'])} "
                     f"time=\"{c['seconds']}\">{body}</testcase>")
    for m, v in report["metrics"].items():
        body = ""
        if m in report["threshold_failures"]:
            f = report["threshold_failures"][m]
            msg = f"{m} mean {v} < {f['threshold']}"
            body = f"<failure message={quoteattr(msg)}/>"
        tests.append(f"<testcase classname={quoteattr('eval.' + report['suite'] + '.metrics')} "
                     f"name={quoteattr(m)}>{body}</testcase>")
    for r in (report.get("comparison") or {}).get("regressions", []):
        name = f"regression {r['metric']}" + (f" {r['case']}" if r["case"] else "")
        msg = f"{r['baseline']} -> {r['now']}"
        cls = quoteattr("eval." + report["suite"] + ".baseline")
        tests.append(f"<testcase classname={cls} name={quoteattr(name)}>"
                     f"<failure message={quoteattr(msg)}/></testcase>")
    failures = sum("<failure" in t for t in tests)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name={quoteattr(report["suite"])} '
            f'tests="{len(tests)}" failures="{failures}" time="{report["seconds"]}">\n'
            + "\n".join(tests) + "\n</testsuite></testsuites>\n")
