"""The Models tab: what is installed (bundled, pulled, imported, fine-tuned adapters) with kind, size, RAM
estimate, licence and source; pull from the model hub with a progress bar; import a local file or folder;
remove; and choose the model each role uses (Chat, Prompt Lab, the `llm` judge, new collections' embeddings).

Models are the whole studio's: in a shared studio, members see the list and admins change it (the core
checks, so the endpoints refuse members too). Every handler takes its inputs as untrusted.
"""

from __future__ import annotations

import time
from functools import partial

import gradio as gr

from studio import modelhub, modelstore
from studio.accounts import Accounts
from studio.config import StudioConfig
from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.paths import Roots
from studio.ui.guard import choice, fail, text
from studio.ui.wiring import Values, on, user_of

KIND_LABELS = {"chat-gguf": "chat (GGUF)", "chat-hf": "chat (HF folder)", "embedding": "embedding",
               "lora-adapter": "LoRA adapter"}
HEADERS = ["name", "kind", "size (MB)", "RAM (MB, est.)", "licence", "source", "role"]
ROLE_NAMES = ("chat", "prompt", "judge", "embedding")
LISTS = ["table", "remove_pick", *(f"{r}_role" for r in ROLE_NAMES)]
NO_SUGGESTION = "(type a repo and file)"
SUGGESTIONS = {f"{s['repo']} {s['file'] or '(model folder)'} · {s['licence']} · {s['size']}": s
               for s in modelhub.SUGGESTED}


class ByteProgress:
    """A tqdm-shaped bar that reports a download to Gradio's progress tracker (a few times a second)."""

    def __init__(self, progress, total=None, initial=0, desc="", **_):
        self.progress, self.total, self.n, self.desc, self.shown = progress, total, initial, desc, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if self.total and (now - self.shown > 0.25 or self.n >= self.total):
            self.shown = now
            self.progress(self.n / self.total, desc=f"downloading {self.desc}: {self.n / 2**20:,.0f} of "
                                                    f"{self.total / 2**20:,.0f} MB")


def lists(_v: Values, *, cfg: StudioConfig, user: str = LOCAL_USER) -> Values:
    """The installed models and the pickers that list them."""
    roles = modelstore.roles_of(cfg)
    rows, removable = [], []
    for m in modelstore.list_models(user=user):
        used = ", ".join(r for r, name in roles.items() if name == m.name)
        rows.append([m.name, KIND_LABELS[m.kind], round(m.size / 2**20), round(m.ram / 2**20), m.licence,
                     m.source, used])
        if m.removable:
            removable.append(m.name)
    chat, embedding = modelstore.chat_model_names(), modelstore.embedding_model_names()
    return {"table": rows, "remove_pick": gr.update(choices=removable, value=None),
            **{f"{r}_role": gr.update(choices=embedding if r == "embedding" else chat, value=roles[r])
               for r in ROLE_NAMES}}


def suggest(v: Values) -> Values:
    """A suggestion's repo and file in the pull form."""
    pick = choice(v["suggestion"], [NO_SUGGESTION, *SUGGESTIONS], "suggestion")
    if pick == NO_SUGGESTION:
        return {}
    s = SUGGESTIONS[pick]
    return {"repo": s["repo"], "file": s["file"] or ""}


def pull_model(v: Values, *, cfg: StudioConfig, user: str = LOCAL_USER, progress=None) -> Values:
    """Download from the model hub (HF_ENDPOINT) with a byte progress bar; the checksum is checked."""
    repo, file = text(v["repo"], "the repo").strip(), text(v["file"], "the file").strip() or None
    name = text(v["name"], "the name").strip() or None
    bar = partial(ByteProgress, progress or (lambda *a, **k: None))
    try:
        m = modelhub.pull(repo, file, name=name, tqdm_class=bar, user=user)
    except StudioError as exc:
        raise fail(exc) from None
    return lists({}, cfg=cfg, user=user) | {
        "status": f"Pulled **{m.name}** ({KIND_LABELS[m.kind]}, {m.size / 2**20:,.0f} MB, licence "
                  f"{m.licence or 'unknown'}; checksum checked). Pick it in Chat's model list, or make it a "
                  "role's model below."}


def import_local(v: Values, *, cfg: StudioConfig, roots: Roots, user: str = LOCAL_USER) -> Values:
    """Copy (or link) a .gguf file or a model folder from the allowed folders into the studio."""
    path = text(v["path"], "the path").strip()
    name = text(v["import_name"], "the name").strip() or None
    try:
        m = modelstore.import_model(path, name, link=bool(v["link"]), roots=roots, user=user)
    except StudioError as exc:
        raise fail(exc) from None
    return lists({}, cfg=cfg, user=user) | {"status": f"Imported **{m.name}** ({KIND_LABELS[m.kind]}, "
                                                      f"{m.size / 2**20:,.0f} MB)."}


def remove_model(v: Values, *, cfg: StudioConfig, user: str = LOCAL_USER) -> Values:
    name = text(v["remove_pick"], "the model").strip()
    if not name:
        raise gr.Error("Pick the model to remove.")
    try:
        modelstore.remove(name, user=user, in_use=modelstore.roles_of(cfg))
    except StudioError as exc:
        raise fail(exc) from None
    return lists({}, cfg=cfg, user=user) | {"status": f"Removed **{name}**."}


def save_roles(v: Values, *, cfg: StudioConfig, user: str = LOCAL_USER) -> Values:
    """Each role's model, saved in the studio home's settings and used at once by this server."""
    current, changed = modelstore.roles_of(cfg), []
    for role in ROLE_NAMES:
        name = text(v.get(f"{role}_role"), f"the {role} model").strip()
        if name and name != current[role]:
            try:
                modelstore.set_role(role, name, cfg, user=user)
            except StudioError as exc:
                raise fail(exc) from None
            changed.append(f"{modelstore.ROLE_HELP[role]}: **{name}**")
    note = "Saved. " + "; ".join(changed) if changed else "Nothing changed."
    return lists({}, cfg=cfg, user=user) | {"status": note}


# --- layout ---------------------------------------------------------------------------------------------
def _bring(ui: dict) -> None:
    with gr.Accordion("Download from the model hub", open=True):
        ui["suggestion"] = gr.Dropdown([NO_SUGGESTION, *SUGGESTIONS], value=NO_SUGGESTION, label="Suggestions",
                                       info="recommended models (not shipped); a GGUF Q4_K_M suits a CPU",
                                       elem_id="models-suggestion")
        with gr.Row():
            ui["repo"] = gr.Textbox(label="Repo", placeholder="Qwen/Qwen2.5-0.5B-Instruct-GGUF", scale=3,
                                    elem_id="models-repo")
            ui["file"] = gr.Textbox(label="File", placeholder="qwen2.5-0.5b-instruct-q4_k_m.gguf (blank: the "
                                    "repo's only GGUF, or its model folder)", scale=3, elem_id="models-file")
            ui["name"] = gr.Textbox(label="Name", placeholder="default: from the file", scale=2,
                                    elem_id="models-name")
        ui["pull"] = gr.Button("Pull", variant="primary", elem_id="models-pull")
    with gr.Accordion("Import a file or folder on the server", open=False):
        with gr.Row():
            ui["path"] = gr.Textbox(label="Path (.gguf file or Hugging Face model folder)", scale=4,
                                    elem_id="models-path")
            ui["import_name"] = gr.Textbox(label="Name", scale=2, elem_id="models-import-name")
            ui["link"] = gr.Checkbox(label="link instead of copying", scale=1)
        ui["import"] = gr.Button("Import", elem_id="models-import")


def _roles(ui: dict) -> None:
    with gr.Accordion("Which model each role uses", open=True):
        with gr.Row():
            for role, label in (("chat", "Chat (and the CLI's default)"), ("prompt", "Prompt Lab"),
                                ("judge", "llm groundedness judge"), ("embedding", "Embeddings of new collections")):
                ui[f"{role}_role"] = gr.Dropdown([], label=label, elem_id=f"models-role-{role}")
        gr.Markdown("A collection keeps the embedding model its vectors came from; to move one to a new model, "
                    "re-embed it in the Documents tab.")
        ui["save_roles"] = gr.Button("Save roles", elem_id="models-save-roles")
    with gr.Row():
        ui["remove_pick"] = gr.Dropdown([], label="Remove a pulled or imported model", scale=3,
                                        elem_id="models-remove-pick")
        ui["remove"] = gr.Button("Remove", variant="stop", scale=1, elem_id="models-remove")


def build_models_tab(cfg: StudioConfig, roots: Roots, tab=None):
    """Widgets and events of the Models tab; returns (fn, outputs) for page load."""
    ui: dict = {}
    ui["table"] = gr.Dataframe(headers=HEADERS, interactive=False, label="Installed models", wrap=True,
                               elem_id="models-table")
    ui["status"] = gr.Markdown(elem_id="models-status")
    _bring(ui)
    _roles(ui)
    show = partial(lists, cfg=cfg)
    out = [*LISTS, "status"]
    on(ui["suggestion"].input, suggest, ui, ["suggestion"], ["repo", "file"], api_name="models_suggest")
    on(ui["pull"].click, partial(pull_model, cfg=cfg), ui, ["repo", "file", "name"], out, api_name="models_pull",
       concurrency_limit=1)
    on(ui["import"].click, partial(import_local, cfg=cfg, roots=roots), ui, ["path", "import_name", "link"], out,
       api_name="models_import", concurrency_limit=1)
    on(ui["remove"].click, partial(remove_model, cfg=cfg), ui, ["remove_pick"], out, api_name="models_remove")
    on(ui["save_roles"].click, partial(save_roles, cfg=cfg), ui, [f"{r}_role" for r in ROLE_NAMES], out,
       api_name="models_roles", defaults={"embedding_role": ""})
    if tab is not None:
        on(tab.select, show, ui, [], LISTS, api_name="models_lists", show_progress="hidden")

    def page_load(request: gr.Request):
        user = user_of(request)
        admin = Accounts().is_admin(user)
        updates = {ui[n]: value for n, value in show({}, user=user).items()}
        for n in ("pull", "import", "remove", "save_roles"):  # members read; the core refuses them anyway
            updates[ui[n]] = gr.update(interactive=admin)
        return updates

    return page_load, [ui[n] for n in (*LISTS, "pull", "import", "remove", "save_roles")]
