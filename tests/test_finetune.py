"""LoRA fine-tuning: tiny real runs of both task kinds, PEFT adapters, cancel/resume, the adapter in chat."""

import json
import math
import os
import pickle
import shutil
import time

import pytest

from finetune.config import FinetuneConfig
from finetune.train import run_finetune
from studio.errors import StudioError
from studio.jobs import Jobs
from tests.conftest import run_studio

pytestmark = pytest.mark.finetune  # real LoRA runs: `make test-finetune` runs only these

RECORDS = "configs/finetune/data/capital_records.jsonl"


def test_generation_run_gives_a_peft_adapter(gen_run):
    from peft import PeftModel

    from studio.backends.hf import load_model_and_tokenizer
    from studio.registry import resolve_model

    run, status = gen_run
    assert status["state"] == "finished" and status["step"] == 12
    assert 0 < status["trainable_share"] < 0.01  # only the LoRA matrices train
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    base, _ = load_model_and_tokenizer(resolve_model("smollm2-135m-instruct"))
    tuned = PeftModel.from_pretrained(base, str(run / "adapter"))
    assert any("lora_A" in n for n, _ in tuned.named_parameters())
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert any("val_loss" in e for e in events) and any("loss" in e for e in events)
    m = json.loads((run / "metrics.json").read_text())
    assert {"val_loss", "perplexity", "exact_match"} <= set(m["before"]) == set(m["after"])
    assert m["after"]["val_loss"] < m["before"]["val_loss"]  # 12 steps already fit the format better
    ex = json.loads((run / "examples.json").read_text())
    assert len(ex) == 3 and {"base_output", "tuned_output", "reference"} <= set(ex[0])


def test_the_adapter_changes_the_hf_chat_backend(gen_run):
    from studio.backends import GenerationSettings, load_backend

    run, _ = gen_run
    msg = [{"role": "user", "content": "Rewrite the sentence as a record in the form country=<country>; "
                                       "capital=<capital>.\n\nOslo is the capital of Norway."}]
    settings = GenerationSettings(temperature=0, max_tokens=24)
    base = load_backend("hf").complete(msg, settings).text
    tuned = load_backend("hf", adapter=str(run / "adapter")).complete(msg, settings).text
    assert tuned != base
    assert "country=" in tuned.replace(" ", "")


def test_the_ui_backend_cache_keeps_adapters_apart(gen_run):
    from studio.backends import BackendCache, GenerationSettings
    from studio.errors import StudioError

    run, _ = gen_run
    cache = BackendCache()
    msg = [{"role": "user", "content": "Rewrite the sentence as a record in the form country=<country>; "
                                       "capital=<capital>.\n\nRome is the capital of Italy."}]
    tuned = cache.get("hf", "smollm2-135m-instruct", None, str(run / "adapter"))
    plain = cache.get("hf", "smollm2-135m-instruct")
    assert tuned is not plain and cache.get("hf", "smollm2-135m-instruct", None, str(run / "adapter")) is tuned
    settings = GenerationSettings(temperature=0, max_tokens=24)
    assert "country=" in tuned.complete(msg, settings).text.replace(" ", "")
    assert "country=" not in plain.complete(msg, settings).text.replace(" ", "")
    with pytest.raises(StudioError, match="hf backend"):
        cache.get("llamacpp", None, None, str(run / "adapter"))


def test_chat_cli_with_the_adapter_and_the_adapter_list(gen_run):
    run, _ = gen_run
    prompt = ("Rewrite the sentence as a record in the form country=<country>; capital=<capital>.\n\n"
              "Oslo is the capital of Norway.")
    res = run_studio("chat", prompt, "--adapter", str(run), "--temperature", "0", "--max-tokens", "24", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "country=" in json.loads(res.stdout)["text"].replace(" ", "")
    bad = run_studio("chat", "hi", "--adapter", str(run), "--backend", "llamacpp")
    assert bad.returncode != 0 and "hf backend" in bad.stderr


def test_merge_gives_the_same_model_without_peft_and_export_zips_it(gen_run, tmp_path):
    import zipfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.adapters import export, merge
    from studio.backends.hf import load_model_and_tokenizer
    from studio.registry import resolve_model

    run, _ = gen_run
    merged_dir = merge(run)
    assert (merged_dir / "config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    base, tok = load_model_and_tokenizer(resolve_model("smollm2-135m-instruct"))
    tuned = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    ids = tok("Vienna is the capital of Austria.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tuned(ids).logits, atol=1e-3)
    z = zipfile.ZipFile(export(run, tmp_path / "a.zip"))
    names = set(z.namelist())
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.yaml",
            "metrics.json"} <= names


def test_a_pickled_trainer_checkpoint_runs_nothing_on_resume(gen_run, tmp_path):
    """A run folder shared by someone else: its Trainer checkpoint files are pickles that run a command."""
    run, _ = gen_run
    shared = tmp_path / "shared-run"
    shutil.copytree(run, shared)
    marker = tmp_path / "pwned"
    newest = max((shared / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with open(newest / name, "wb") as fh:
            pickle.dump(_Payload(marker), fh)
    config = shared / "config.yaml"
    config.write_text(config.read_text().replace("steps: 12", "steps: 14"))
    with pytest.raises(StudioError, match="not loaded"):
        run_finetune(FinetuneConfig(), shared, resume=True)
    assert not marker.exists()
    assert json.loads((shared / "status.json").read_text())["state"] == "failed"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_classification_run_on_minilm(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from studio.registry import resolve_model

    cfg = FinetuneConfig(data="configs/finetune/data/reviews.csv", task="classification", steps=3,
                         batch_size=16, eval_every=3, lr=2e-3, max_length=32)
    status = run_finetune(cfg, tmp_path)
    assert status["state"] == "finished"
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"accuracy", "f1", "val_loss"} <= set(m["after"])
    base = AutoModelForSequenceClassification.from_pretrained(str(resolve_model("minilm-l6-v2").path), num_labels=2)
    PeftModel.from_pretrained(base, str(tmp_path / "adapter"))


def test_bad_rows_are_reported_and_the_good_ones_kept(tmp_path):
    data = tmp_path / "d.jsonl"
    good = [json.dumps({"instruction": f"Say {w}.", "output": w}) for w in ("yes", "no", "maybe", "sure")]
    data.write_text("\n".join([good[0], "{broken", good[1], '{"instruction": "x"}', good[2], good[3]]) + "\n")
    res = run_studio("finetune", "run", "configs/finetune/capital_records.yaml", f"data={data}", "steps=1",
                     "eval_every=1", "eval_examples=1", "val_ratio=0.25", "--run-dir", str(tmp_path / "r"), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["status"] == "finished" and out["job_id"]
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert [b["line"] for b in status["bad_rows"]] == [2, 4] and status["rows"] == 4


def cancel_after_a_checkpoint_then_resume(run, more: int, *overrides: str) -> tuple[str, int]:
    """Start a long background job, cancel it once it has a checkpoint, let it run ``more`` steps
    after the step it stopped at; returns (job id, the step it stopped at) once it finished."""
    res = run_studio("finetune", "run", "configs/finetune/capital_records.yaml", "steps=400", "eval_examples=1",
                     "max_length=96", *overrides, "--run-dir", str(run), "--background", "--json")
    job = json.loads(res.stdout)["job_id"]
    end = time.time() + 240
    while time.time() < end and not list((run / "checkpoints").glob("checkpoint-*")):
        time.sleep(0.5)
    assert run_studio("jobs", "cancel", job).returncode == 0
    jobs = Jobs()
    assert jobs.wait(job, 120).state == "cancelled"
    stopped = json.loads((run / "status.json").read_text())["step"]
    cfg = (run / "config.yaml").read_text().replace("steps: 400", f"steps: {stopped + more}")
    (run / "config.yaml").write_text(cfg)
    assert run_studio("jobs", "resume", job).returncode == 0
    done = jobs.wait(job, 240)
    assert done.state == "finished", (run / "job.log").read_text()[-3000:]
    return job, stopped


def test_cancel_then_resume_continues(tmp_path):
    run = tmp_path / "bg"
    _, stopped = cancel_after_a_checkpoint_then_resume(run, 4, "eval_every=4", "val_ratio=0.05")
    assert stopped >= 4
    steps = [json.loads(x)["step"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert max(steps) == stopped + 4 and (run / "adapter" / "adapter_config.json").is_file()


def test_two_cpu_processes_under_accelerate_launch_cancel_and_resume(tmp_path):
    run = tmp_path / "ddp"
    # cancelling reaches both processes; they stop at the same step, or the job would hang
    _, stopped = cancel_after_a_checkpoint_then_resume(run, 2, "processes=2", "eval_every=3", "batch_size=4")
    status = json.loads((run / "status.json").read_text())
    assert status["processes"] == 2 and status["step"] == stopped + 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    train_steps = [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if "loss" in e]
    assert [e["step"] for e in train_steps] == list(range(1, stopped + 3))  # one writer (rank 0), no gaps
    # the two processes split the rows: an epoch is ceil(train / 2 / 4) steps of 4 rows each, not train / 4
    assert train_steps[0]["epoch"] == pytest.approx(1 / math.ceil(status["train"] / 2 / 4), abs=1e-3)
