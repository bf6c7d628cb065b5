"""Fine-tuned adapters on llama.cpp: a PEFT LoRA adapter exported to GGUF answers as the PEFT adapter does, it is
picked over hf once exported (CLI, Chat, Prompt Lab), adapters llama.cpp cannot apply are refused, and a merged
GGUF loads and answers."""

import json
import math
import os
import shutil
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from finetune.adapters import adapter_of
from finetune.gguf_export import export_gguf, lora_summary, lora_weights, merge_gguf
from studio.backends import BackendCache, GenerationSettings, load_backend
from studio.errors import StudioError
from tests.conftest import run_studio

pytestmark = pytest.mark.finetune

HELDOUT = [json.loads(line) for line in open("configs/finetune/data/capital_records_heldout.jsonl")]
GREEDY = GenerationSettings(temperature=0, max_tokens=24)


def ask(row: dict) -> list[dict]:
    return [{"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"}]


@pytest.fixture()
def run(gen_run, tmp_path):
    """A copy of the 12-step capital-records run, to export or change freely."""
    copy = tmp_path / "capitals"
    shutil.copytree(gen_run[0], copy, ignore=shutil.ignore_patterns("checkpoints", "merged*"))
    return copy


def logits_gap(run) -> tuple[float, float, float]:
    """On a held-out prompt: (llama.cpp + the exported GGUF adapter vs transformers + PEFT, plain llama.cpp vs
    plain transformers (what quantized inference alone differs by), plain llama.cpp vs transformers + PEFT),
    each the mean absolute difference of the logits at every position."""
    import torch
    from llama_cpp import Llama
    from peft import PeftModel

    from studio.backends.hf import load_model_and_tokenizer
    from studio.registry import resolve_model

    spec = resolve_model("smollm2-135m-instruct")
    base, tok = load_model_and_tokenizer(spec)
    tuned = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    prompt = tok.apply_chat_template(ask(HELDOUT[2]), tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        peft_logits = tuned(torch.tensor([ids])).logits[0].float().numpy()
        with tuned.disable_adapter():
            base_logits = tuned(torch.tensor([ids])).logits[0].float().numpy()

    def llama_logits(**kw):
        llm = Llama(str(spec.path), n_ctx=512, logits_all=True, verbose=False, **kw)
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)])

    plain, adapted = llama_logits(), llama_logits(lora_path=str(run / "adapter.gguf"))
    return (np.abs(adapted - peft_logits).mean(), np.abs(plain - base_logits).mean(),
            np.abs(plain - peft_logits).mean())


def test_the_exported_adapter_gives_llamacpp_the_peft_adapters_logits(run):
    out = export_gguf(run)
    assert out == run / "adapter.gguf" and adapter_of(run).gguf == out
    assert lora_summary(out) == {"type": "lora", "alpha": 16.0, "base_model": "smollm2-135m-instruct", "rank": 8,
                                 "tensors": 60, "modules": ["attn_q", "attn_v"], "layers": 30}
    gap, floor, moved = logits_gap(run)
    assert gap <= 1.25 * floor, (gap, floor)  # 0.16 against 0.21 here; 0.41 without the query row permutation
    assert moved > 4 * gap  # the adapter moved the logits, and llama.cpp followed


def test_a_key_adapter_gets_llamacpps_row_order_for_grouped_query_attention(tmp_path):
    # SmolLM2 has 9 query heads but 3 key/value heads: key rows are permuted per key/value head
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.backends.hf import load_model_and_tokenizer
    from studio.jobs import write_status
    from studio.registry import resolve_model

    base, _ = load_model_and_tokenizer(resolve_model("smollm2-135m-instruct"))
    torch.manual_seed(0)  # a random adapter (PEFT's init without zeroing B): it moves the logits by 1.16 here
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj"], init_lora_weights=False))
    run = tmp_path / "keys"
    model.save_pretrained(str(run / "adapter"))
    write_status(run, state="finished", task="generation", base_model="smollm2-135m-instruct")
    export_gguf(run)
    assert lora_summary(run / "adapter.gguf")["modules"] == ["attn_k"]
    gap, floor, moved = logits_gap(run)
    assert gap <= 1.25 * floor and moved > 4 * gap, (gap, floor, moved)  # 0.22, 0.21; 1.03 unpermuted


def test_chat_and_the_cli_run_an_exported_adapter_on_llamacpp(run):
    row = HELDOUT[0]
    prompt = ask(row)[0]["content"]
    refused = run_studio("chat", prompt, "--adapter", str(run), "--backend", "llamacpp")
    assert refused.returncode != 0 and "not been exported for llama.cpp yet" in refused.stderr
    res = run_studio("finetune", "export", str(run), "--format", "gguf", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout)
    assert info["path"] == str(run / "adapter.gguf") and info["alpha"] == 16.0 and info["rank"] == 8
    fast = run_studio("chat", prompt, "--adapter", str(run), "--temperature", "0", "--max-tokens", "24", "--json")
    assert fast.returncode == 0, fast.stderr[-2000:]
    got = json.loads(fast.stdout)
    assert got["backend"] == "llamacpp" and got["model"] == "smollm2-135m-instruct+capitals"
    assert got["text"].strip() == row["output"]  # 'country=Estonia; capital=Tallinn'
    slow = run_studio("chat", prompt, "--adapter", str(run), "--backend", "hf", "--temperature", "0",
                      "--max-tokens", "24", "--json")
    assert json.loads(slow.stdout)["backend"] == "hf" and json.loads(slow.stdout)["text"].strip() == row["output"]
    plain = load_backend("llamacpp").complete(ask(row), GREEDY).text
    assert "country=" not in plain.replace(" ", "")


def test_a_retrained_adapter_is_not_served_from_its_old_gguf(run):
    export_gguf(run)
    assert adapter_of(run).serving() == ("llamacpp", str(run / "adapter.gguf"))
    weights = run / "adapter" / "adapter_model.safetensors"
    later = (run / "adapter.gguf").stat().st_mtime + 5
    os.utime(weights, (later, later))  # the run trained on after the export (resume)
    assert adapter_of(run).gguf is None and adapter_of(run).serving() == ("hf", str(run / "adapter"))


def _edit_config(run, **changes):
    path = run / "adapter" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _add_tensors(run, extra: dict):
    path = run / "adapter" / "adapter_model.safetensors"
    save_file({**load_file(str(path)), **extra}, str(path))


def _status(run, **changes):
    path = run / "status.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


REFUSALS = [
    ("classification", lambda r: _status(r, task="classification", labels=["a", "b"]), "classification head"),
    ("dora", lambda r: _edit_config(r, use_dora=True), "DoRA"),
    ("modules_to_save", lambda r: _edit_config(r, modules_to_save=["score"]), "trains whole modules too"),
    ("alpha_pattern", lambda r: _edit_config(r, alpha_pattern={"q_proj": 32}), "one alpha per adapter"),
    ("tied lm_head", lambda r: _add_tensors(r, {
        "base_model.model.lm_head.lora_A.weight": np.zeros((8, 576), np.float32),
        "base_model.model.lm_head.lora_B.weight": np.zeros((49152, 8), np.float32)}), "shares the embedding matrix"),
    ("unknown module", lambda r: _add_tensors(r, {
        "base_model.model.model.layers.0.mlp.router.lora_A.weight": np.zeros((8, 576), np.float32),
        "base_model.model.model.layers.0.mlp.router.lora_B.weight": np.zeros((4, 8), np.float32)}),
     "router, which has no tensor of its own"),
    ("other weights", lambda r: _add_tensors(r, {
        "base_model.model.model.embed_tokens.lora_embedding_A": np.zeros((8, 49152), np.float32)}),
     "not a LoRA matrix"),
    ("wrong base", lambda r: _add_tensors(r, {
        "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight": np.zeros((8, 960), np.float32),
        "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight": np.zeros((576, 8), np.float32)}),
     "was it trained on another model"),
    ("model folder base", lambda r: _status(r, base_model="minilm-l6-v2"), "GGUF models only"),
]


@pytest.mark.parametrize(("case", "change", "message"), REFUSALS, ids=[c for c, _, _ in REFUSALS])
def test_adapters_llamacpp_cannot_apply_are_refused_with_what_to_do(run, case, change, message):
    change(run)
    with pytest.raises(StudioError, match=message) as err:
        export_gguf(run)
    assert "hf backend" in str(err.value) or "another model" in str(err.value)
    assert not list(run.glob("*.gguf")) and not list(run.glob(".*.tmp"))  # nothing half-written is left


def test_an_export_that_fails_while_writing_leaves_no_file(run, monkeypatch):
    import gguf

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    export_gguf(run)
    before = (run / "adapter.gguf").read_bytes()
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_gguf(run)
    assert (run / "adapter.gguf").read_bytes() == before and not list(run.glob(".*.tmp"))  # the old one stays


def test_what_a_killed_export_left_is_removed_by_the_next_one(run):
    killed = run / ".adapter.gguf.0123abcd.tmp"  # as a SIGKILL mid-write leaves it
    writing = run / ".adapter.gguf.4567cdef.tmp"  # another tab's export, still being written
    for f in (killed, writing):
        f.write_bytes(b"GGUF partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(killed, (hours_ago, hours_ago))
    export_gguf(run)
    assert not killed.exists() and writing.exists() and (run / "adapter.gguf").is_file()


def test_rslora_scaling_is_folded_into_lora_b(run):
    plain = {name: b for name, _, b in lora_weights(run).tensors}
    _edit_config(run, use_rslora=True)
    scaled = {name: b for name, _, b in lora_weights(run).tensors}
    name = "blk.3.attn_v.weight"
    np.testing.assert_allclose(scaled[name], plain[name] * math.sqrt(8), rtol=1e-6)


def test_the_backend_cache_keeps_the_gguf_adapter_apart_and_inside_the_roots(run, tmp_path):
    from studio.paths import Roots

    out = export_gguf(run)
    cache = BackendCache(roots=Roots([tmp_path]))
    tuned = cache.get("llamacpp", "smollm2-135m-instruct", None, str(out))
    plain = cache.get("llamacpp", "smollm2-135m-instruct")
    assert tuned is not plain and tuned.describe() == "smollm2-135m-instruct+capitals (llamacpp)"
    assert cache.get("llamacpp", "smollm2-135m-instruct", None, str(out)) is tuned
    later = out.stat().st_mtime + 5
    os.utime(out, (later, later))  # exported again after more training: the running studio loads the new one
    assert cache.get("llamacpp", "smollm2-135m-instruct", None, str(out)) is not tuned
    assert tuned.complete(ask(HELDOUT[4]), GREEDY).text.strip() == HELDOUT[4]["output"]
    with pytest.raises(StudioError, match="PEFT adapter folder"):
        cache.get("llamacpp", None, None, str(run / "adapter"))
    with pytest.raises(StudioError, match="PEFT adapter folder"):
        cache.get("hf", None, None, str(out))
    outside = BackendCache(roots=Roots([tmp_path / "elsewhere"]))
    with pytest.raises(StudioError, match="outside the folders this studio may read"):
        outside.get("llamacpp", None, None, str(out))


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_a_merged_gguf_loads_and_answers_in_the_tuned_format(run, quant):
    seen = []
    out = merge_gguf(run, quant, progress=lambda f, what: seen.append((f, what)))
    assert out == run / f"merged-{quant}.gguf" and not list(run.glob(".*.tmp"))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1 and any("folding" in what for _, what in seen)
    merged = load_backend("llamacpp", str(out))
    try:
        answers = [merged.complete(ask(row), GREEDY).text.strip() for row in HELDOUT[:12]]
    finally:
        merged.close()
    assert sum("country=" in a and "capital=" in a for a in answers) >= 10, answers  # the tuned format
    assert sum(a == row["output"] for a, row in zip(answers, HELDOUT, strict=False)) >= 5, answers  # 7 and 6 here
    size = out.stat().st_size / 1e6
    assert (250 < size < 300) if quant == "f16" else (130 < size < 160)  # 135M weights in 16 or 8.5 bits


def test_merge_refuses_an_unknown_quantization(run):
    with pytest.raises(StudioError, match="quant must be one of: f16, q8_0"):
        merge_gguf(run, "q3_xs")
    assert not list(run.glob("*.gguf"))


def test_the_finetune_tab_exports_and_chat_and_the_prompt_lab_then_use_llamacpp(run):
    import gradio as gr

    from studio.config import StudioConfig
    from studio.ui import chat_tab, jobs_ui
    from studio.ui import finetune_tab as ft
    from studio.ui.prompt_tab import PromptServices, list_adapters_of

    job_id = jobs_ui.jobs().register("finetune", ["finetune", "run"], run, state="finished").id
    picked = chat_tab.pick_adapter({"adapter": str(run / "adapter")})
    assert picked["backend"]["value"] == "hf"  # not exported yet
    out = ft.export_gguf_adapter({"job": job_id})
    assert out["action_note"].startswith("Exported for llama.cpp: `adapter.gguf`")
    assert "rank 8, alpha 16, attn_q, attn_v in 30 layers; base smollm2-135m-instruct" in out["action_note"]
    assert str(run) not in out["action_note"]
    assert f"| {run.name} | generation |" in out["adapters"] and "llama.cpp (exported)" in out["adapters"]
    picked = chat_tab.pick_adapter({"adapter": str(run / "adapter")})
    assert picked["backend"]["value"] == "llamacpp" and picked["model"]["value"] == "smollm2-135m-instruct"
    assert chat_tab.picked_adapter(str(run / "adapter"), "hf") == ("hf", "smollm2-135m-instruct",
                                                                    str(run / "adapter"))
    with pytest.raises(gr.Error, match="one of your finished fine-tunes") as err:
        chat_tab.picked_adapter(str(run.parent / "elsewhere" / "adapter"), None)
    assert str(run.parent) not in str(err.value)  # the refusal lists no server paths
    choices = list_adapters_of({})["adapter"]["choices"]
    assert any(value == str(run / "adapter") and "llama.cpp" in label for label, value in choices)
    lab = PromptServices(StudioConfig(), BackendCache())
    assert lab.backend(str(run / "adapter")).describe() == "smollm2-135m-instruct+capitals (llamacpp)"
    assert lab.backend(None).describe() == "smollm2-135m-instruct (llamacpp)"
    with pytest.raises(gr.Error, match="merged format must be one of"):
        ft.merge_adapter({"job": job_id, "merge_format": "GGUF q3"})


@pytest.mark.browser
def test_chat_in_the_browser_runs_an_exported_adapter_on_llamacpp(gen_run, studio_home, browser, studio_server):
    run = studio_home / "runs" / "finetune" / "capitals-gguf"
    shutil.copytree(gen_run[0], run, ignore=shutil.ignore_patterns("checkpoints", "merged*", "*.gguf"))
    export_gguf(run)
    row = HELDOUT[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        page.goto(studio_server, wait_until="domcontentloaded")
        page.wait_for_selector("#chat-input textarea", timeout=30_000)
        page.get_by_text("Model", exact=True).first.click()  # the Model accordion
        page.click("#chat-adapter input")
        page.locator("ul[role=listbox] li", has_text="capitals-gguf").first.click()
        page.wait_for_function("document.querySelector('#chat-backend input').value === 'llamacpp'", timeout=10_000)
        page.get_by_text("Generation", exact=True).first.click()
        temperature = page.locator("#chat-temperature input[type=number]")
        temperature.fill("0")
        temperature.press("Enter")
        page.fill("#chat-input textarea", ask(row)[0]["content"])
        page.click("#chat-send")
        page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tokens')", timeout=120_000)
    except Exception:
        page.screenshot(path="/tmp/ui_gguf_adapter_fail.png", full_page=True)
        raise
    stats = page.inner_text("#chat-stats")
    reply = page.locator('#chatbot [data-testid="bot"]').last.inner_text()
    page.close()
    assert stats.startswith("smollm2-135m-instruct+capitals-gguf (llamacpp)"), stats
    assert reply.strip() == row["output"], reply
