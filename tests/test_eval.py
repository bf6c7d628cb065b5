"""The eval harness: groundedness scorers, RAG metrics, suites, reports, CLI and calibration."""

import json
import xml.etree.ElementTree as ET

import pytest

from eval import calibration, data, metrics
from eval.groundedness import LLMScorer, claims, get_scorer
from eval.suite import EvalSuite, compare, junit, load_suite, run_suite
from studio.errors import StudioError
from tests.conftest import run_studio

CONTEXT = ("The function seq() has five arguments. When neither by nor length is given, the default step by=1 "
           "is assumed. A related function is rep(), which replicates an object.")
SUPPORTED = "seq() has five arguments."
CHANGED = "seq() has seven arguments."
UNRELATED = "Photosynthesis in chloroplasts converts sunlight into glucose."


# --- groundedness --------------------------------------------------------------------------------------

def test_claims_drop_citations_and_lead_ins():
    assert claims("The answer is: seq() has five arguments [1]. From the documents:") == [
        "seq() has five arguments."]


@pytest.mark.parametrize("scorer", ["judge", "encoder", "lexical", "embedding"])
def test_each_scorer_ranks_supported_above_unsupported(scorer):
    judge = get_scorer(scorer)
    good = judge.score(CONTEXT, SUPPORTED)
    bad = judge.score(CONTEXT, UNRELATED)
    assert 0 <= bad.score < good.score <= 1
    assert good.sentences[0].supported and not bad.sentences[0].supported


def test_judge_flags_the_one_unsupported_sentence():
    g = get_scorer("judge").score(CONTEXT, f"{SUPPORTED} {UNRELATED}")
    assert [s.supported for s in g.sentences] == [True, False]
    assert g.unsupported == [UNRELATED]
    assert g.score == pytest.approx((g.sentences[0].score + g.sentences[1].score) / 2, abs=1e-4)
    assert "five arguments" in g.sentences[0].evidence


def test_judge_notices_a_changed_number():
    judge = get_scorer("judge")
    assert judge.score(CONTEXT, CHANGED).score < judge.score(CONTEXT, SUPPORTED).score


def test_unknown_scorer_and_missing_nli_folder_are_clear(tmp_path):
    with pytest.raises(StudioError, match="choose one of"):
        get_scorer("oracle")
    with pytest.raises(StudioError, match="no NLI model folder"):
        get_scorer(f"nli:{tmp_path}/nothing")


def test_nli_scorer_runs_a_local_cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder

    from studio.registry import resolve_model

    # a cross-encoder built from the bundled MiniLM (untrained head): the plumbing, not the quality
    model = CrossEncoder(str(resolve_model("minilm-l6-v2").path), num_labels=3, device="cpu")
    model.model.config.id2label = {0: "contradiction", 1: "entailment", 2: "neutral"}
    model.save_pretrained(str(tmp_path / "nli"))
    g = get_scorer(f"nli:{tmp_path / 'nli'}").score(CONTEXT, f"{SUPPORTED} {UNRELATED}")
    assert len(g.sentences) == 2 and all(0 <= s.score <= 1 for s in g.sentences)


def test_evidence_puts_the_closest_sentence_first_within_its_budget():
    from eval.text import Context

    ctx = Context(CONTEXT + " " + " ".join(f"Filler sentence number {i} about nothing." for i in range(40)))
    ev = ctx.evidence("rep() replicates an object.")
    assert ev.startswith("A related function is rep(), which replicates an object.")
    assert len(ev.split()) <= 80 and "seq()" not in ev.split(".")[0]
    first = ctx.evidence("rep() replicates an object.", budget=5)
    assert first == "A related function is rep(), which replicates an object."


def test_claim_encoder_reads_the_evidence_not_only_the_claim():
    from eval.crossencoder import ClaimEncoder

    enc = ClaimEncoder()
    other = "The Danube flows through Vienna and Budapest before it reaches the Black Sea."
    right, changed, elsewhere = enc.logits([(CONTEXT, SUPPORTED), (CONTEXT, CHANGED), (other, SUPPORTED)])
    assert right > changed and right > elsewhere
    assert get_scorer("nli:eval/data/claim-encoder").score(CONTEXT, SUPPORTED).sentences[0].supported


def test_claim_encoder_onnx_engine_matches_pytorch_and_is_cached():
    from eval.crossencoder import ENCODER_DIR, ClaimEncoder
    from studio import onnxrt

    items = [(data.manual_page(p["source"], p["page"]), p[key])
             for p in map(json.loads, data.CLAIM_PAIRS.read_text().splitlines()[:6])
             for key in ("supported", "unsupported")]
    fast = ClaimEncoder(engine="onnx")
    assert fast.engine == "onnx"
    got, want = fast.logits(items, batch_size=5), ClaimEncoder(engine="torch").logits(items, batch_size=5)
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-3
    cache = onnxrt.cache_dir("claim-encoder", ENCODER_DIR)
    assert onnxrt.read_verdict(cache)["max_logit_difference"] < 1e-3
    model = cache / "model.onnx"
    stamp = model.stat().st_mtime_ns
    assert ClaimEncoder().engine == "onnx" and model.stat().st_mtime_ns == stamp  # the verified export is reused
    model.unlink()  # a cache emptied by hand is exported and checked again, not left on the slow engine
    assert ClaimEncoder().engine == "onnx" and model.is_file()


def test_claim_encoder_refuses_an_export_that_drifts(tmp_path, monkeypatch):
    from eval import crossencoder

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))  # no verified export yet: this one is checked
    monkeypatch.setattr(crossencoder, "ONNX_TOLERANCE", -1.0)  # any difference at all is too much
    with pytest.raises(StudioError, match="drifts from PyTorch"):
        crossencoder.ClaimEncoder(engine="onnx")
    fallback = crossencoder.ClaimEncoder()  # auto falls back to the reference engine
    assert fallback.engine == "torch" and len(fallback.logits([(CONTEXT, SUPPORTED)])) == 1
    with pytest.raises(StudioError, match="auto, onnx or torch"):
        crossencoder.ClaimEncoder(engine="gpu")


def test_encoder_scores_agree_across_processes(tmp_path):
    # Python randomises set order per process; the evidence the encoder reads must not depend on it
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps({"context": p.context, "answer": p.answer})
                           for p in data.load_set("r-manuals")))
    outs = [run_studio("eval", "groundedness", str(f), "--scorer", "encoder", env={"PYTHONHASHSEED": seed})
            for seed in ("1", "2")]
    assert outs[0].returncode == 0 and outs[0].stdout.count("\n") == 84
    assert outs[0].stdout == outs[1].stdout


def test_claim_encoder_training_writes_a_loadable_cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder

    from eval.crossencoder import ClaimEncoder
    from eval.training import EncoderConfig, train_encoder

    cfg = EncoderConfig(qa_rows=10, dialogue_rows=10, summarization_rows=5, claims_per_task=(8, 8, 8),
                        swaps_per_task=4, synthetic_qa=8, synthetic_manuals=8, manual_pages=2, epochs=1,
                        max_length=64)
    steps = []
    info = train_encoder(tmp_path / "enc", cfg, progress=lambda s, n, loss: steps.append((s, n)))
    assert info["examples"] >= 40 and steps[-1][0] == steps[-1][1] == info["steps"]
    assert json.loads((tmp_path / "enc" / "training.json").read_text())["config"]["seed"] == 0
    assert ClaimEncoder(tmp_path / "enc").max_length == 64  # it reads what it was trained on
    assert len(ClaimEncoder(tmp_path / "enc").logits([(CONTEXT, SUPPORTED)])) == 1
    assert CrossEncoder(str(tmp_path / "enc"), device="cpu").predict([(CONTEXT, SUPPORTED)]).shape == (1,)


@pytest.mark.parametrize("scorer", ["judge", "encoder"])
def test_scorers_read_the_context(scorer):
    # the same supported claims, scored against another page of the manuals, lose their support
    assert calibration.context_swap_auroc(get_scorer(scorer), "r-manuals") > 0.9
    assert calibration.context_swap_auroc(get_scorer("lexical"), "r-manuals") > 0.5


def test_answer_only_baseline_shows_what_style_gives_away():
    # a classifier that never sees the context separates HaluEval dialogue answers well above chance
    assert calibration.answer_only_auroc("halueval-dialogue", n=200, train_rows=1000) > 0.7
    assert calibration.answer_only_auroc("r-manuals") is None


def test_llm_judge_always_answers_in_json(llamacpp):
    judge = LLMScorer(llamacpp)
    g = judge.score(CONTEXT, f"{SUPPORTED} {UNRELATED} rep() replicates an object.")
    assert len(g.sentences) == 3
    assert all(s.score in (0.0, 1.0) for s in g.sentences)  # parsed every time, never an error


# --- RAG metrics ---------------------------------------------------------------------------------------

def test_average_precision_by_hand():
    assert metrics.average_precision([1, 0, 1]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert metrics.average_precision([0, 0]) == 0.0


def test_context_precision_rewards_relevant_chunks_first():
    reference = "seq() has five arguments."
    relevant, other = CONTEXT, "Chloroplasts hold chlorophyll. Leaves are green."
    assert metrics.context_precision(reference, [relevant, other]) == 1.0
    assert metrics.context_precision(reference, [other, relevant]) == 0.5


def test_context_recall_counts_supported_reference_sentences():
    reference = f"{SUPPORTED} {UNRELATED}"
    assert metrics.context_recall(reference, [CONTEXT]) == pytest.approx(
        get_scorer("judge").score(CONTEXT, reference).score)
    assert metrics.context_recall(SUPPORTED, [CONTEXT]) > 0.5 > metrics.context_recall(UNRELATED, [CONTEXT])


def test_answer_relevance_prefers_an_on_topic_answer(llamacpp):
    q = "How many arguments does seq() take?"
    on, off = "seq() takes five arguments.", "Paris is the capital of France."
    assert metrics.answer_relevance(q, on) > metrics.answer_relevance(q, off)
    ragas = metrics.answer_relevance(q, on, backend=llamacpp, n=2)
    assert 0 <= ragas <= 1
    assert ragas == metrics.answer_relevance(q, on, backend=llamacpp, n=2)  # seeded: repeatable


def test_rubric_is_json_constrained(llamacpp):
    value = metrics.rubric("What is the capital of France?", "Paris.", "Names the right city.", llamacpp)
    assert value in (0.0, 0.25, 0.5, 0.75, 1.0)


# --- suites and reports --------------------------------------------------------------------------------

def answers_suite(**kw) -> EvalSuite:
    cases = [
        {"id": "good", "question": "How many arguments does seq() have?", "answer": SUPPORTED,
         "contexts": [CONTEXT], "reference": SUPPORTED, "expected": "five"},
        {"id": "bad", "question": "How many arguments does seq() have?", "answer": UNRELATED,
         "contexts": [CONTEXT], "reference": SUPPORTED, "expected": "five"},
    ]
    return EvalSuite(name="answers", pipeline="answers", cases=cases,
                     metrics=["groundedness", "context_recall", "contains"], **kw).check_valid()


def test_suite_scores_cases_and_applies_thresholds(tmp_path):
    report = run_suite(answers_suite(thresholds={"contains": 0.9}), tmp_path)
    good, bad = report["cases"]
    assert good["metrics"]["contains"] == 1.0 and bad["metrics"]["contains"] == 0.0
    assert good["metrics"]["groundedness"] > bad["metrics"]["groundedness"]
    assert bad["unsupported"] == [UNRELATED] and not bad["passed"] and good["passed"]
    assert report["metrics"]["contains"] == 0.5 and not report["passed"]
    assert report["threshold_failures"] == {"contains": {"value": 0.5, "threshold": 0.9}}
    for name in ("report.json", "report.md", "report.html", "config.yaml"):
        assert (tmp_path / name).is_file()
    assert "FAILED" in (tmp_path / "report.md").read_text()
    assert 'class="bad"' in (tmp_path / "report.html").read_text()


def test_junit_lists_cases_and_metric_failures(tmp_path):
    report = run_suite(answers_suite(thresholds={"contains": 0.9}))
    root = ET.fromstring(junit(report))
    suite = root.find("testsuite")
    names = [t.get("name") for t in suite.iter("testcase")]
    assert names == ["good", "bad", "groundedness", "context_recall", "contains"]
    failed = [t.get("name") for t in suite.iter("testcase") if t.find("failure") is not None]
    assert failed == ["bad", "contains"] and suite.get("failures") == "2"


def test_compare_lists_regressions():
    before = run_suite(answers_suite())
    after = json.loads(json.dumps(before))
    after["cases"][0]["metrics"]["contains"] = 0.0
    after["metrics"]["contains"] = 0.0
    result = compare(after, before)
    assert {(r["metric"], r["case"]) for r in result["regressions"]} == {("contains", None), ("contains", "good")}
    assert compare(before, before)["regressions"] == []


def test_bad_suites_are_refused(tmp_path):
    with pytest.raises(StudioError, match="unknown metric 'bleu'"):
        EvalSuite(metrics=["bleu"], cases=[{"question": "q"}]).check_valid()
    with pytest.raises(StudioError, match="no cases"):
        EvalSuite().check_valid()
    with pytest.raises(StudioError, match="thresholds name metrics"):
        EvalSuite(metrics=["contains"], thresholds={"groundedness": 0.5}, cases=[{"question": "q"}]).check_valid()
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\ndataset: missing.jsonl\n")
    with pytest.raises(StudioError, match="missing.jsonl not found"):
        load_suite(bad)


def test_prompt_pipeline_with_checks(llamacpp, tmp_path):
    suite = tmp_path / "p.yaml"
    suite.write_text(
        "name: capitals\npipeline: prompt\ntechnique: zero-shot\nmetrics: [contains]\n"
        "cases:\n  - {question: \"What is the capital of France?\", expected: Paris}\n")
    report = run_suite(load_suite(suite))
    assert report["cases"][0]["metrics"]["contains"] == 1.0 and report["passed"]


def test_rag_suite_twice_gives_identical_scores(tmp_path):
    args = ["eval", "run", "configs/eval/rag_smoke.yaml", "--json"]
    first = run_studio(*args, "--out", str(tmp_path / "a"))
    second = run_studio(*args, "--out", str(tmp_path / "b"), "--baseline", str(tmp_path / "a"),
                        "--junit", str(tmp_path / "junit.xml"))
    assert first.returncode == 0, first.stderr[-2000:]
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["metrics"] == b["metrics"] and [c["answer"] for c in a["cases"]] == [c["answer"] for c in b["cases"]]
    assert set(a["metrics"]) == {"groundedness", "answer_relevance", "context_precision", "context_recall", "contains"}
    assert b["comparison"]["regressions"] == [] and second.returncode == 0
    assert ET.parse(tmp_path / "junit.xml").getroot().find("testsuite").get("failures") == "0"


def test_cli_fail_under_exit_code(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\npipeline: answers\nmetrics: [groundedness, contains]\ncases:\n"
        f"  - {{question: q, answer: {json.dumps(SUPPORTED)}, contexts: [{json.dumps(CONTEXT)}], expected: five}}\n")
    ok = run_studio("eval", "run", str(suite), "--out", str(tmp_path / "r1"), "--fail-under", "0.5")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED" in ok.stdout
    failing = run_studio("eval", "run", str(suite), "--out", str(tmp_path / "r2"), "--fail-under", "0.99")
    assert failing.returncode == 1 and "FAILED" in failing.stdout
    bad = run_studio("eval", "run", str(tmp_path / "none.yaml"))
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


# --- `studio eval groundedness` ---------------------------------------------------------------------------

def test_cli_groundedness_adds_scores_in_order(tmp_path):
    rows = [{"id": 1, "context": CONTEXT, "answer": SUPPORTED}, {"id": 2, "context": CONTEXT, "answer": UNRELATED}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    res = run_studio("eval", "groundedness", str(src), "--out", str(out))
    assert res.returncode == 0, res.stderr
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == [1, 2] and scored[0]["context"] == CONTEXT
    assert 0 <= scored[1]["score"] < scored[0]["score"] <= 1
    same = run_studio("eval", "groundedness", "--batch", str(src), "--scorer", "lexical")
    assert [json.loads(x)["scorer"] for x in same.stdout.splitlines()] == ["lexical", "lexical"]
    src.write_text('{"context": "x"}\n')
    bad = run_studio("eval", "groundedness", str(src))
    assert bad.returncode == 2 and "line" in bad.stderr and "answer" in bad.stderr


# --- calibration ---------------------------------------------------------------------------------------

def test_auroc_by_hand():
    assert calibration.auroc([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]) == 1.0
    assert calibration.auroc([1, 0], [0.5, 0.5]) == 0.5
    assert calibration.auroc([1, 1, 0, 0], [0.9, 0.2, 0.3, 0.1]) == 0.75


def test_judge_beats_both_baselines_on_hand_written_claim_pairs():
    r = calibration.calibrate(get_scorer("judge"), data.load_set("r-manuals"))
    assert r["pairs"] == 84
    assert r["auroc"] >= 0.8 > r["lexical_auroc"] and r["auroc"] > r["length_auroc"]
    assert r["pairs_per_second"] >= 20


def test_cli_calibrate_on_a_file_of_labelled_pairs(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"context": CONTEXT, "answer": SUPPORTED, "label": 1}, {"context": CONTEXT, "answer": UNRELATED, "label": 0},
        {"context": CONTEXT, "answer": "rep() replicates an object.", "label": 1},
        {"context": CONTEXT, "answer": "rep() deletes an object forever.", "label": 0}]))
    res = run_studio("eval", "calibrate", "--set", str(f), "--json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)["sets"][str(f)]
    assert row["pairs"] == 4 and row["auroc"] == 1.0


def test_restate_rewords_a_sentence_but_keeps_its_facts():
    import random

    rng = random.Random(0)
    before = "The function seq() is a more general facility for generating sequences."
    said = data.restate("It has five arguments (from, to, by, length and along).", before, rng)
    assert said.startswith("The function seq() has five arguments")  # the pronoun resolved
    fronted = data.restate("For large matrices, only.values = TRUE avoids computing unneeded eigenvectors.",
                                  None, random.Random(3))
    assert fronted.startswith("Only.values = TRUE avoids") and fronted.endswith("eigenvectors for big matrices.")
    for k in range(50):
        text = "If header is not given, R cannot read 3 files and may use 2 of them."
        out = data.restate(text, None, random.Random(k))
        assert all(w in out for w in ("If", "not", "cannot", "3", "2"))  # conditions, negations, numbers stay
    passage = (before + " It has five arguments (from, to, by, length and along). For large matrices, "
               "only.values = TRUE avoids computing unneeded eigenvectors.")
    pairs = data.synthetic_pairs([passage], 40, seed=0, restated=1.0)
    positives = [p.answer for p in pairs if p.label == 1]
    assert len(positives) == 20 and any(p not in pairs[0].context for p in positives)


def test_halueval_rows_for_fitting_never_overlap_evaluation():
    test_ctx = {p.context for p in data.halueval("dialogue", 50)}
    train_ctx = {p.context for p in data.halueval("dialogue", 50, offset=data.TRAIN_OFFSET)}
    assert len(test_ctx) > 40 and not test_ctx & train_ctx


# --- the Chat tab's answer check ----------------------------------------------------------------------------

def test_chat_highlights_the_unsupported_sentence():
    from studio.ui.chat_rag import highlight_unsupported

    reply = f"{SUPPORTED} [1] {UNRELATED} [2]"
    g = get_scorer("judge").score(CONTEXT, reply)
    marked = highlight_unsupported(reply, [s.__dict__ for s in g.sentences])
    assert marked.count("<mark") == 1
    inside = marked.split("<mark", 1)[1].split("</mark>")[0]
    assert "Photosynthesis" in inside and "five arguments" not in inside


def test_rag_answer_carries_per_sentence_groundedness(llamacpp, tmp_path):
    from ingest.config import IngestConfig
    from ingest.pipeline import Ingestor
    from studio.rag.chain import RagChain
    from studio.rag.retriever import Retriever
    from tests.pdfgen import make_pdf

    pdf = make_pdf(tmp_path / "falls.pdf", ["Angel Falls in Venezuela is the highest waterfall, 979 metres high."])
    ing = Ingestor(IngestConfig())
    ing.ingest([pdf], "eval-falls")
    res = RagChain(Retriever(ing, "eval-falls"), llamacpp).ask("How high is Angel Falls?")
    assert res.answerable and res.sentences
    assert res.groundedness == pytest.approx(sum(s["score"] for s in res.sentences) / len(res.sentences), abs=1e-3)
    assert res.groundedness == get_scorer("judge").score("\n\n".join(h.text for h in res.hits),
                                                          res.scored_text).score


def test_the_shipped_claim_encoder_is_the_frozen_one():
    """Retrains go to STUDIO_HOME/models; the weights in git are frozen and match their recorded SHA-256."""
    import hashlib

    from eval.crossencoder import ENCODER_DIR

    recorded = dict(line.split()[::-1] for line in (ENCODER_DIR / "SHA256SUMS").read_text().splitlines())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((ENCODER_DIR / name).read_bytes()).hexdigest() == digest, name
