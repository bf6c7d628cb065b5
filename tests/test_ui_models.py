"""The Models tab: its handlers called as the page calls them (pull through the local hub, import, remove,
roles, who may do what), the roles reaching Chat, the Prompt Lab, the judge and the CLI, and a real browser
that pulls a model through the local hub and chats with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import gradio as gr
import pytest
import yaml
from localhub import GGUF, REPO

from studio import audit, modelhub, modelstore
from studio.accounts import Accounts
from studio.backends import BackendCache
from studio.config import StudioConfig
from studio.paths import Roots
from studio.ui import models_tab
from studio.ui.prompt_tab import PromptServices
from tests.conftest import ROOT, STUDIO, serving

pytestmark = pytest.mark.slow


@pytest.fixture()
def home(fresh_home, monkeypatch, hub):
    """A fresh studio home (roles saved here stay here) whose pulls go to the local hub."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return fresh_home


def studio(home, *args):
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.run([STUDIO, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def names(update: dict) -> list[str]:
    return [row[0] for row in update["table"]]


def test_pull_in_the_tab_then_make_it_the_chat_model_everywhere(home):
    cfg, shown = StudioConfig(), []
    before = models_tab.lists({}, cfg=cfg)
    assert names(before)[:2] == ["minilm-l6-v2", "smollm2-135m-instruct"]
    assert before["chat_role"]["value"] == "smollm2-135m-instruct"
    filled = models_tab.suggest({"suggestion": next(iter(models_tab.SUGGESTIONS))})
    assert filled["repo"] == modelhub.SUGGESTED[0]["repo"] and filled["file"].endswith(".gguf")

    got = models_tab.pull_model({"repo": REPO, "file": GGUF, "name": "smol-hub"}, cfg=cfg,
                                progress=lambda frac, desc="": shown.append((frac, desc)))
    assert "Pulled **smol-hub**" in got["status"] and "checksum checked" in got["status"]
    assert shown and shown[-1][0] == 1.0 and "MB" in shown[-1][1]  # a byte progress bar that reached the end
    row = next(r for r in got["table"] if r[0] == "smol-hub")
    assert row[1] == "chat (GGUF)" and row[4] == "apache-2.0" and row[5].startswith(f"hub: {REPO}")
    assert "smol-hub" in got["chat_role"]["choices"] and got["remove_pick"]["choices"] == ["smol-hub"]

    saved = models_tab.save_roles({"chat_role": "smol-hub", "prompt_role": "smollm2-135m-instruct",
                                   "judge_role": "smol-hub", "embedding_role": "minilm-l6-v2"}, cfg=cfg)
    assert "Chat (and every command's default): **smol-hub**" in saved["status"]
    assert cfg.chat.model == "smol-hub" and cfg.chat.backend == "llamacpp"  # this server uses it at once
    assert yaml.safe_load((home / "settings.yaml").read_text())["chat"]["model"] == "smol-hub"
    assert (home / "settings.yaml").stat().st_mode & 0o777 == 0o600  # the studio home's files are private
    assert next(r for r in saved["table"] if r[0] == "smol-hub")[6] == "chat, prompt, judge"  # (prompt: as chat)
    # a new process reads the saved roles: the CLI's chat answers with it, by default
    assert json.loads(studio(home, "models", "roles", "--json").stdout) == {
        "chat": "smol-hub", "prompt": "smol-hub", "judge": "smol-hub", "embedding": "minilm-l6-v2"}
    out = studio(home, "chat", "What is the capital of France? Answer in one word.", "--temperature", "0", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"] == "smol-hub" and "Paris" in json.loads(out.stdout)["text"]
    assert modelstore.judge_scorer(cfg.chat) == "llm:smol-hub"

    # a model a role uses is not removed from under it
    with pytest.raises(gr.Error, match="smol-hub is the model of the chat, prompt, judge roles"):
        models_tab.remove_model({"remove_pick": "smol-hub"}, cfg=cfg)
    models_tab.save_roles({"chat_role": "smollm2-135m-instruct", "prompt_role": "smollm2-135m-instruct",
                           "judge_role": "smollm2-135m-instruct", "embedding_role": "minilm-l6-v2"}, cfg=cfg)
    gone = models_tab.remove_model({"remove_pick": "smol-hub"}, cfg=cfg)
    assert "smol-hub" not in names(gone) and "Removed **smol-hub**" in gone["status"]
    assert [e["action"] for e in audit.entries(home=home)][:2] == ["model.pull", "model.role"]


def test_the_prompt_lab_and_the_judge_use_their_roles_models(home, gguf_path):
    cfg = StudioConfig()
    modelstore.import_model(gguf_path, "smol-prompt", link=True)
    modelstore.set_role("prompt", "smol-prompt", cfg)
    modelstore.set_role("judge", "smol-prompt", cfg)
    assert PromptServices(cfg, BackendCache()).backend().model_name == "smol-prompt"
    assert cfg.chat.model == "smollm2-135m-instruct"  # Chat keeps its own
    from eval.groundedness import get_scorer

    judge = get_scorer(modelstore.judge_scorer(cfg.chat))
    assert judge.backend.model_name == "smol-prompt"
    g = judge.score("Paris is the capital of France.", "Paris is the capital of France.")
    assert 0.0 <= g.score <= 1.0 and g.sentences


def test_members_read_the_list_but_only_admins_change_it(home, tmp_path, gguf_path):
    accounts = Accounts(home)
    accounts.add("ada", "ada-password", admin=True)
    accounts.add("bob", "bob-password")
    cfg, roots = StudioConfig(), Roots([tmp_path])
    (tmp_path / "link.gguf").symlink_to(gguf_path)  # a link out of the allowed folders is no way out
    with pytest.raises(gr.Error, match="outside the folders"):
        models_tab.import_local({"path": str(tmp_path / "link.gguf"), "import_name": "x", "link": False}, cfg=cfg,
                                roots=roots, user="ada")
    shutil.copy(gguf_path, tmp_path / "model.gguf")
    assert "smollm2-135m-instruct" in names(models_tab.lists({}, cfg=cfg, user="bob"))
    for act in (lambda: models_tab.pull_model({"repo": REPO, "file": GGUF, "name": "x"}, cfg=cfg, user="bob"),
                lambda: models_tab.import_local({"path": str(tmp_path / "model.gguf"), "import_name": "x",
                                                 "link": True}, cfg=cfg, roots=roots, user="bob"),
                lambda: models_tab.save_roles({"chat_role": "minilm-l6-v2", "prompt_role": "",
                                               "judge_role": ""}, cfg=cfg, user="bob")):
        with pytest.raises(gr.Error, match="only an admin may"):
            act()
    done = models_tab.import_local({"path": str(tmp_path / "model.gguf"), "import_name": "ada-smol", "link": True},
                                   cfg=cfg, roots=roots, user="ada")
    assert "Imported **ada-smol**" in done["status"]
    with pytest.raises(gr.Error, match="only an admin may remove"):
        models_tab.remove_model({"remove_pick": "ada-smol"}, cfg=cfg, user="bob")
    with pytest.raises(gr.Error, match="not an installed chat model"):  # an embedding model cannot chat
        models_tab.save_roles({"chat_role": "minilm-l6-v2", "prompt_role": "", "judge_role": ""}, cfg=cfg,
                              user="ada")
    assert [(e["actor"], e["action"], e["target"]) for e in audit.entries(home=home)
            if e["action"].startswith("model.")] == [("ada", "model.import", "ada-smol")]


def test_an_import_outside_the_allowed_folders_is_refused_without_naming_the_path(home, tmp_path, gguf_path):
    cfg = StudioConfig()
    for path in (str(gguf_path), "/etc/passwd", "../../etc/passwd"):
        with pytest.raises(gr.Error, match="outside the folders") as err:
            models_tab.import_local({"path": path, "import_name": "", "link": False}, cfg=cfg,
                                    roots=Roots([tmp_path]))
        # no server folder in the answer (the user's own relative text may come back as typed)
        assert str(gguf_path.parent) not in str(err.value) and str(tmp_path) not in str(err.value)
        assert "/etc/passwd" not in str(err.value).replace("../../etc/passwd", "")
    with pytest.raises(gr.Error, match="suggestion must be one of"):
        models_tab.suggest({"suggestion": "evil/repo"})


@pytest.mark.browser
def test_a_browser_pulls_a_model_through_the_local_hub_and_chats_with_it(browser, hub, tmp_path):
    env = {"STUDIO_HOME": str(tmp_path / "home"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    with serving(tmp_path, "serve", "--no-preload", env=env) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Models").click()
        page.wait_for_selector("#models-repo textarea, #models-repo input", timeout=30_000)
        page.locator("#models-repo textarea, #models-repo input").first.fill(REPO)
        page.locator("#models-file textarea, #models-file input").first.fill(GGUF)
        page.locator("#models-name textarea, #models-name input").first.fill("smol-hub")
        page.click("#models-pull")
        page.wait_for_function("document.querySelector('#models-status').innerText.includes('Pulled smol-hub')",
                               timeout=120_000)
        assert "smol-hub" in page.locator("#models-table").inner_text()
        page.get_by_role("tab", name="Chat").click()
        page.get_by_text("Model", exact=True).first.click()  # the Model accordion
        page.click("#chat-model input")
        page.locator("ul[role=listbox] li", has_text="smol-hub").first.click()
        page.fill("#chat-input textarea", "What is the capital of France? Answer in one word.")
        page.click("#chat-send")
        page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('smol-hub')",
                               timeout=120_000)
        assert "Paris" in page.locator('#chatbot [data-testid="bot"]').last.inner_text()
        page.close()
