"""The Fine-tune tab's handlers (and the job controls it shares with Generate) called as the page calls
them, with plain dicts: no browser, no server, no training. A job's rendering is checked on run folders
written here by hand, as the training loop writes them (status.json, events.jsonl, metrics.json).

What only a browser shows (a real 3-step job filling the page) stays in tests/test_ui_finetune.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from studio.jobs import write_status
from studio.paths import Roots, uploads_dir
from studio.ui import finetune_tab as ft
from studio.ui import jobs_ui
from tests.conftest import ROOT

REVIEWS = "configs/finetune/data/reviews.csv"


@pytest.fixture()
def services(monkeypatch):
    monkeypatch.chdir(ROOT)  # presets and the dropdown name data files relative to the checkout
    return ft.FinetuneServices(Roots.for_server())


def request(**changes) -> dict:
    """The values the page sends on Preview or Start, with the tab's defaults."""
    v = {"upload": None, "data": "", "task": "auto", "base": "auto", "r": 8, "alpha": 16, "dropout": 0.05,
         "targets": "", "lr": 0.0005, "epochs": 3, "steps": 0, "batch": 8, "accum": 1, "max_length": 256,
         "eval_every": 20, "patience": 3, "seed": 0, "n_examples": 20, "merge": False}
    assert list(v) == ft.REQUEST  # the endpoint's positional order
    return {**v, **changes}


# --- preview, presets, the config ----------------------------------------------------------------------
@pytest.mark.slow
def test_preview_tokenizes_the_first_rows_of_a_csv(services):
    md = ft.preview_data(request(data=REVIEWS), services=services)["preview"]
    assert md.startswith("**") and " rows**, task **classification**, labels " in md
    assert "1. " in md and "tokens; label: " in md and "```" in md
    assert "malformed" not in md


def test_a_preset_fills_every_field_and_builds_its_config(services):
    filled = ft.fill_preset({"preset": "capital_records"})
    assert list(filled) == ft.FIELDS
    assert filled == {"data": "configs/finetune/data/capital_records.jsonl", "task": "auto",
                      "base": "smollm2-135m-instruct", "r": 8, "alpha": 16, "dropout": 0.05,
                      "targets": "q_proj,v_proj", "lr": 0.001, "epochs": 3, "steps": 0, "batch": 8,
                      "accum": 1, "max_length": 128, "eval_every": 20, "patience": 3, "seed": 0,
                      "n_examples": 20, "merge": False}
    cfg = ft.make_config({"upload": None, **filled}, services.roots)
    assert Path(cfg.data) == (ROOT / filled["data"]).resolve()
    assert cfg.task is None and cfg.base_model == "smollm2-135m-instruct" and cfg.steps == -1
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.max_length == 128


def test_no_preset_changes_nothing_and_an_unknown_one_is_refused():
    assert list(ft.fill_preset({"preset": None})) == ["data"]  # one skip: Gradio refuses an empty update
    assert ft.fill_preset({"preset": ""})["data"] == gr.skip()
    with pytest.raises(gr.Error, match="preset must be one of: .*capital_records"):
        ft.fill_preset({"preset": "../../etc/passwd"})


def test_the_config_takes_the_widgets_values(services):
    cfg = ft.make_config(request(data=REVIEWS, task="classification", targets=" query, value ,", steps=0,
                                 eval_every=0, seed="", merge=1, epochs="2.5"), services.roots)
    assert cfg.task == "classification" and cfg.base_model is None
    assert cfg.target_modules == ["query", "value"] and cfg.steps == -1 and cfg.eval_every == 1
    assert cfg.seed == 0 and cfg.merge is True and cfg.epochs == 2.5
    assert Path(cfg.data) == (ROOT / REVIEWS).resolve()
    assert ft.make_config(request(data=REVIEWS, steps=5, base="minilm-l6-v2"), services.roots).steps == 5
    upload = uploads_dir() / "mine.csv"
    upload.write_text("text,label\ngood,pos\nbad,neg\n")
    assert ft.make_config(request(upload=str(upload), data=REVIEWS), services.roots).data == str(upload.resolve())


@pytest.mark.parametrize("field, name, kind", [
    ("r", "LoRA rank", "whole"), ("alpha", "alpha", "whole"), ("dropout", "dropout", "finite"),
    ("lr", "learning rate", "finite"), ("epochs", "epochs", "finite"), ("steps", "steps", "whole"),
    ("batch", "batch size", "whole"), ("accum", "gradient accumulation", "whole"),
    ("max_length", "max length", "whole"), ("eval_every", "evaluate every", "whole"),
    ("patience", "patience", "whole"), ("seed", "seed", "whole"), ("n_examples", "examples", "whole"),
])
@pytest.mark.parametrize("bad", ["many", float("nan"), "1e999"])
def test_every_number_is_checked(services, field, name, kind, bad):
    with pytest.raises(gr.Error) as err:
        ft.make_config(request(data=REVIEWS, **{field: bad}), services.roots)
    assert err.value.message == f"{name} must be a {kind} number"


def test_fractions_where_a_whole_number_belongs_are_refused(services):
    with pytest.raises(gr.Error, match="LoRA rank must be a whole number"):
        ft.make_config(request(data=REVIEWS, r=8.5), services.roots)


@pytest.mark.parametrize("changes, says", [
    ({}, "Pick a dataset or upload one."),
    ({"data": "   "}, "Pick a dataset or upload one."),
    ({"data": REVIEWS, "task": "summarization"}, "task must be one of: auto, generation, classification"),
    ({"data": REVIEWS, "targets": "q_proj; rm -rf /"}, "target_modules must be module names"),
    ({"data": REVIEWS, "targets": "x" * 20_000}, "limits.message_chars"),
    ({"data": REVIEWS, "base": "gpt-17"}, "unknown model 'gpt-17'"),
])
def test_bad_requests_are_refused_with_a_sentence(services, changes, says):
    with pytest.raises(gr.Error, match=says):
        ft.make_config(request(**changes), services.roots)


def test_paths_outside_the_allowed_roots_are_refused_alike(services):
    def refusal(**changes) -> str:
        with pytest.raises(gr.Error) as err:
            ft.make_config(request(**changes), services.roots)
        return err.value.message

    secret, missing = refusal(data="/etc/passwd"), refusal(data="/etc/no-such-file.jsonl")
    assert "outside the folders" in secret
    assert secret.replace("passwd", "X") == missing.replace("no-such-file.jsonl", "X")
    assert "outside the folders" in refusal(data="configs/../../../../etc/passwd")
    assert "outside the folders" in refusal(upload="/etc/passwd", data=REVIEWS)
    assert "outside the folders" in refusal(data=REVIEWS, base="/etc")
    assert str(ROOT) not in refusal(data="configs/finetune/data/missing.jsonl", base="/etc")


@pytest.mark.parametrize("changes, limit", [
    ({"epochs": 10**7}, "limits.epochs"), ({"steps": 10**9}, "limits.train_steps"),
    ({"r": 10**6}, "limits.lora_rank"), ({"batch": 10**6}, "limits.batch_size"),
    ({"max_length": 10**7}, "limits.max_length"), ({"n_examples": 10**7}, "limits.eval_examples"),
])
def test_sizes_over_the_limits_are_refused(services, changes, limit):
    with pytest.raises(gr.Error, match=limit):
        ft.make_config(request(data=REVIEWS, **changes), services.roots)


def test_a_dataset_too_small_to_split_is_refused_before_any_job(services):
    one = uploads_dir() / "one-row.jsonl"
    one.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    before = [j.id for j in jobs_ui.jobs().list()]
    with pytest.raises(gr.Error, match="at least two good rows"):
        ft.start_job(request(upload=str(one)), services=services)
    with pytest.raises(gr.Error, match="not found") as err:
        ft.start_job(request(data="configs/finetune/data/missing.jsonl"), services=services)
    assert str(ROOT) not in str(err.value)
    assert [j.id for j in jobs_ui.jobs().list()] == before


# --- a job rendered from its run folder ------------------------------------------------------------------
def hand_written_run(run: Path, state: str = "finished", done: bool = True) -> str:
    """A run folder as a 3-step generation fine-tune leaves it, registered as a job; returns its id."""
    run.mkdir(parents=True)
    write_status(run, state=state, task="generation", base_model="smollm2-135m-instruct", step=3, max_steps=3,
                 trainable=460_800, total_params=134_975_808, trainable_share=460_800 / 134_975_808,
                 train=170, val=30, truncated=2, bad_rows=[{"line": 7, "error": "no output"}],
                 error="out of memory" if state == "failed" else None)
    events = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "val_loss": 1.6},
              {"step": 3, "loss": 1.2}, {"step": 3, "val_loss": 1.7}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"step": 4, "lo')
    if done:
        (run / "metrics.json").write_text(json.dumps({
            "before": {"val_loss": 2.1, "perplexity": 8.2, "exact_match": 0.0},
            "after": {"val_loss": 1.6, "perplexity": 5.0, "exact_match": 0.5}, "early_stopped": True,
            "best_step": 2}))
        (run / "examples.json").write_text(json.dumps([{"prompt": "Capital of France?", "reference": "Paris",
                                                         "base_output": "Lyon", "tuned_output": "Paris"}]))
    return jobs_ui.jobs().register("finetune", ["finetune", "run"], run, state=state).id


def test_a_finished_run_shows_its_status_curve_results_and_examples(tmp_path):
    job_id = hand_written_run(tmp_path / "capital_records-1")
    out = ft.show({"job": job_id})
    assert set(out) == set(ft.SHOWN)
    status = out["status"]
    assert status.startswith("**finished** · generation on smollm2-135m-instruct · step 3/3")
    assert "trainable 460,800 of 134,975,808 parameters (0.34%)" in status and "170 train / 30 validation" in status
    assert "run folder `" in status and "capital_records-1" in status and str(tmp_path) not in status
    assert "2 examples were cut" in status and "**1 malformed rows skipped** (line 7: no output)" in status
    assert "the adapter is from the best step, 2" in status and "**Error:**" not in status
    ax = out["plot"].axes[0]
    assert [line.get_label() for line in ax.get_lines()[:2]] == ["train loss", "validation loss"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]  # the line cut by a kill is skipped
    assert isinstance(out["results"], pd.DataFrame)
    assert out["results"].to_dict("records")[2] == {"metric": "exact_match", "before": 0.0, "after": 0.5}
    assert list(out["examples"].columns) == ["prompt", "expected", "base model", "fine-tuned"]
    assert out["examples"].iloc[0]["fine-tuned"] == "Paris"
    assert isinstance(out["adapters"], str)
    assert out["shown"][:2] == [job_id, "finished"]


def test_the_timer_redraws_only_when_the_status_changed(tmp_path):
    run = tmp_path / "capital_records-2"
    job_id = hand_written_run(run, state="failed", done=False)
    first = ft.show({"job": job_id})
    assert set(first) == {"status", "plot", "shown"}  # not finished: results, examples, adapters stay
    assert "**failed**" in first["status"] and "**Error:** out of memory" in first["status"]
    assert ft.show({"job": job_id, "shown": first["shown"]}) == {"shown": first["shown"]}  # nothing redrawn
    write_status(run, step=3)  # the loop wrote again: status.json's "updated" moved
    again = ft.show({"job": job_id, "shown": first["shown"]})
    assert set(again) == {"status", "plot", "shown"} and again["shown"] != first["shown"]


@pytest.mark.parametrize("job", [None, "", "deadbeef", "../../etc"])
def test_no_or_an_unknown_job_shows_nothing(job):
    assert ft.show({"job": job, "shown": ["x"]}) == {"status": "No job selected.", "shown": None}


def test_refresh_lists_the_jobs_and_an_upload_becomes_the_dataset(tmp_path):
    job_id = hand_written_run(tmp_path / "capital_records-3")
    out = ft.refresh({})
    assert job_id in [v for _, v in out["job"]["choices"]] and isinstance(out["adapters"], str)
    label = dict((v, k) for k, v in out["job"]["choices"])[job_id]
    assert label == f"{job_id} · finished · capital_records-3 · step 3"
    assert ft.use_upload({"upload": "/tmp/x.csv"})["data"]["value"] == "/tmp/x.csv"


# --- job controls and adapter actions --------------------------------------------------------------------
@pytest.mark.parametrize("job, says", [
    (None, "Pick a job first."), ("", "Pick a job first."), ("deadbeef", "no job 'deadbeef'"),
    ("../../etc", "is not a job id"),
])
def test_cancel_and_resume_refuse_no_or_an_unknown_job(job, says):
    with pytest.raises(gr.Error, match=says):
        jobs_ui.cancel_job({"job": job})
    with pytest.raises(gr.Error, match=says):
        jobs_ui.resume_job({"job": job}, kind="finetune")


def test_cancel_and_resume_refuse_what_the_job_state_does_not_allow(tmp_path):
    finished = hand_written_run(tmp_path / "capital_records-4")
    with pytest.raises(gr.Error, match=f"job {finished} already finished"):
        jobs_ui.cancel_job({"job": finished})
    with pytest.raises(gr.Error, match="only a cancelled or failed job can be resumed"):
        jobs_ui.resume_job({"job": finished}, kind="finetune")
    failed = hand_written_run(tmp_path / "capital_records-5", state="failed", done=False)
    with pytest.raises(gr.Error, match="has no checkpoint to resume from") as err:
        jobs_ui.resume_job({"job": failed}, kind="finetune")
    assert str(tmp_path) not in str(err.value)


def test_merge_and_export_need_a_job_with_an_adapter(tmp_path):
    for handler in (ft.merge_adapter, ft.export_adapter):
        with pytest.raises(gr.Error, match="Pick a finished job first."):
            handler({"job": None})
        with pytest.raises(gr.Error, match="Pick a finished job first."):
            handler({"job": "deadbeef"})
    job_id = hand_written_run(tmp_path / "capital_records-6")
    with pytest.raises(gr.Error, match="has no finished adapter") as err:
        ft.export_adapter({"job": job_id})
    assert str(tmp_path) not in str(err.value)
