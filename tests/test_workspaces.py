"""Workspaces of a shared studio: each account's collections (and jobs) are its own; an admin can share a
collection read-only. The rule lives in the core, so the endpoints behind the page and the CLI enforce it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gradio_client import Client

from ingest.config import IngestConfig
from ingest.pipeline import Ingestor
from studio import audit
from studio.accounts import Accounts
from studio.errors import StudioError
from studio.rag.retriever import Retriever
from tests.conftest import logged_in, run_studio, serving

FACTS = "Lake Baikal in Siberia is the deepest lake on Earth, about 1,642 metres deep.\n"


@pytest.fixture()
def home(fresh_home, tmp_path):
    """A studio home with accounts ada (admin) and bob, and a text file to ingest."""
    home = fresh_home
    accounts = Accounts(home)
    accounts.add("ada", "ada-password", admin=True)
    accounts.add("bob", "bob-password")
    (tmp_path / "lakes.txt").write_text(FACTS * 3)
    return home


@pytest.fixture(scope="module")
def embedder():
    from ingest.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings()


def test_a_collection_is_its_creators_until_an_admin_shares_it(home, embedder, tmp_path):
    ada = Ingestor(IngestConfig(), embedder=embedder, user="ada")
    bob = ada.for_user("bob")
    ada.ingest([tmp_path / "lakes.txt"], "ada-lakes")
    assert [(c.name, c.owner, c.shared) for c in ada.collections()] == [("ada-lakes", "ada", False)]
    assert bob.collections() == []
    # bob cannot read, search, change or take over ada's private collection, and learns nothing of it
    for act in (lambda: bob.documents("ada-lakes"), lambda: bob.query("ada-lakes", "deepest lake"),
                lambda: Retriever(bob, "ada-lakes"), lambda: bob.remove("ada-lakes", "lakes.txt"),
                lambda: bob.delete_collection("ada-lakes"), lambda: bob.publish("ada-lakes")):
        with pytest.raises(StudioError, match="no collection 'ada-lakes'; your collections: none yet"):
            act()
    with pytest.raises(StudioError, match="the name 'ada-lakes' is taken"):
        bob.ingest([tmp_path / "lakes.txt"], "ada-lakes")
    assert [r.source for r in ada.documents("ada-lakes")] == ["lakes.txt"]

    # only an admin shares, and a shared collection is read-only for the others
    bob.ingest([tmp_path / "lakes.txt"], "bob-lakes")
    with pytest.raises(StudioError, match="only an admin can share"):
        bob.publish("bob-lakes")
    ada.publish("ada-lakes")
    assert [(c.name, c.shared) for c in bob.collections()] == [("bob-lakes", False), ("ada-lakes", True)]
    assert "Baikal" in bob.query("ada-lakes", "deepest lake", k=1)[0].text
    assert "Baikal" in Retriever(bob, "ada-lakes").retrieve("Which lake is the deepest?")[0].text
    for act in (lambda: bob.remove("ada-lakes", "lakes.txt"), lambda: bob.delete_collection("ada-lakes"),
                lambda: bob.ingest([tmp_path / "lakes.txt"], "ada-lakes")):
        with pytest.raises(StudioError, match="shared read-only; only its owner \\(ada\\)"):
            act()
    assert ada.for_user("local").collections() == [c for c in ada.collections() if c.shared]  # shared only
    ada.publish("ada-lakes", shared=False)
    assert [c.name for c in bob.collections()] == ["bob-lakes"]

    # deleting frees the name; the audit log says who did what
    ada.delete_collection("ada-lakes")
    bob.ingest([tmp_path / "lakes.txt"], "ada-lakes")
    assert [c.owner for c in bob.collections() if c.name == "ada-lakes"] == ["bob"]
    done = [(e["actor"], e["action"], e["target"]) for e in audit.entries(home=home)
            if e["action"].startswith("collection.")]
    assert done == [("ada", "collection.ingest", "ada-lakes"), ("bob", "collection.ingest", "bob-lakes"),
                    ("ada", "collection.publish", "ada-lakes"), ("ada", "collection.unpublish", "ada-lakes"),
                    ("ada", "collection.delete", "ada-lakes"), ("bob", "collection.ingest", "ada-lakes")]


def test_collections_from_before_workspaces_are_the_local_users(home, embedder, tmp_path):
    # a collection written straight into the store (no owner recorded), as an older studio left it
    old = Ingestor(IngestConfig(), embedder=embedder)
    old.store.add_chunks("old-notes", ["x-1"], embedder.encode(["A note."]), ["A note."], [{"source": "n.txt"}])
    assert [(c.name, c.owner) for c in old.collections()] == [("old-notes", "local")]
    assert old.for_user("ada").collections() == []


def test_cli_lists_only_the_users_collections_and_publishing_is_for_admins(home, tmp_path):
    env = {"STUDIO_HOME": str(home)}
    lakes = str(tmp_path / "lakes.txt")
    assert run_studio("--user", "bob", "ingest", lakes, "--collection", "bob-lakes", env=env).returncode == 0
    assert run_studio("ingest", lakes, "--collection", "local-lakes", env=env).returncode == 0
    listed = json.loads(run_studio("--user", "bob", "docs", "collections", "--json", env=env).stdout)
    assert [(r["collection"], r["owner"], r["shared"], r["documents"]) for r in listed] == [
        ("bob-lakes", "bob", False, 1)]
    out = run_studio("--user", "bob", "docs", "publish", "--collection", "bob-lakes", env=env)
    assert out.returncode == 2 and "only an admin can share" in out.stderr
    out = run_studio("--user", "bob", "query", "deepest lake", "--collection", "local-lakes", env=env)
    assert out.returncode == 2 and "no collection 'local-lakes'" in out.stderr and "Baikal" not in out.stdout
    out = run_studio("docs", "publish", "--collection", "local-lakes", env=env)
    assert out.returncode == 0 and "shared with everyone, read-only" in out.stdout
    out = run_studio("--user", "bob", "query", "deepest lake", "--collection", "local-lakes", "--json", env=env)
    assert out.returncode == 0 and "Baikal" in json.loads(out.stdout)["hits"][0]["text"]


def test_another_users_collection_is_refused_through_the_api(home, embedder, tmp_path):
    # ada's private collection; bob calls the endpoints behind the Documents and Chat tabs with its name
    from gradio_client import handle_file

    Ingestor(IngestConfig(), embedder=embedder, user="ada").ingest([tmp_path / "lakes.txt"], "ada-lakes")
    with serving(tmp_path, "serve", "--no-preload", env={"STUDIO_HOME": str(home)}) as url:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False)
        assert "ada-lakes" not in json.dumps(bob.predict(api_name="/docs_load"))
        assert "ada-lakes" not in json.dumps(bob.predict(api_name="/chat_lists"))
        listing = bob.predict(collection="ada-lakes", api_name="/listing_update")
        assert "lakes.txt" not in json.dumps(listing)
        calls = [  # (the call, why it is refused: the core's rule, or Gradio's own check of the choices first)
            (dict(collection="ada-lakes", query="deepest lake", k=3, api_name="/search"), "no collection 'ada-lakes'"),
            (dict(collection="ada-lakes", to_delete="lakes.txt", api_name="/on_delete"), "not in the list of choices"),
            (dict(files=[handle_file(str(tmp_path / "lakes.txt"))], folder=None, collection="ada-lakes",
                  splitter="recursive", chunk_size=0, overlap=-1, api_name="/ingest"),
             "the name 'ada-lakes' is taken"),
            (dict(collection="ada-lakes", api_name="/publish"), "no collection 'ada-lakes'"),
            (dict(message="Which lake is the deepest?", collection="ada-lakes", api_name="/chat"),
             "not in the list of choices"),
        ]
        for call, why in calls:
            with pytest.raises(Exception, match=why) as refused:  # the client wraps the server's error
                bob.predict(**call)
            assert "Baikal" not in str(refused.value), call["api_name"]
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        hits = ada.predict(collection="ada-lakes", query="deepest lake", k=3, api_name="/search")
        assert "Baikal" in json.dumps(hits)
        ada.predict(collection="ada-lakes", api_name="/publish")
        hits = bob.predict(collection="ada-lakes", query="deepest lake", k=3, api_name="/search")
        assert "Baikal" in json.dumps(hits)  # shared: bob reads it now
    ing = Ingestor(IngestConfig(), embedder=embedder, user="ada")
    assert [r.source for r in ing.documents("ada-lakes")] == ["lakes.txt"]  # bob's delete changed nothing


def test_jobs_are_their_owners_and_admins_see_all(home, tmp_path):
    from studio.jobs import Jobs

    db = home / "jobs.sqlite"
    run = tmp_path / "ada-secret-run"
    run.mkdir()
    (run / "events.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    # ada's job holds the only slot (this test's own process stands in for it), so nothing else starts
    hers = Jobs(db, 1, user="ada").register("generate", ["generate", "train"], run, state="running", pid=os.getpid())
    bob = Jobs(db, 1, user="bob")
    queued = bob.submit("generate", ["generate", "train"], tmp_path / "bob-run")
    assert [j.id for j in bob.list()] == [queued.id] and queued.owner == "bob" and queued.state == "queued"
    for act in (lambda: bob.get(hers.id), lambda: bob.cancel(hers.id), lambda: bob.resume(hers.id),
                lambda: bob.log(hers.id), lambda: bob.tail(hers.id)):
        with pytest.raises(StudioError, match=f"no job '{hers.id}'"):
            act()
    assert bob.queue_position(queued.id) == (1, None)  # waiting, but not told on whose job or which run
    # admins (ada, and the local user at the command line) see and control every job
    assert {j.id for j in Jobs(db, 1, user="ada").list()} == {hers.id, queued.id}
    assert Jobs(db, 1).queue_position(queued.id)[1].id == hers.id
    assert Jobs(db, 1, user="ada").cancel(queued.id).state == "cancelled"
    # fair use: an account has at most limits.jobs_per_user jobs queued or running
    for n in range(2):
        bob.submit("generate", ["generate", "train"], tmp_path / f"bob-{n}")
    with pytest.raises(StudioError, match="you have 2 jobs queued or running; the limit is 2 per account"):
        bob.submit("generate", ["generate", "train"], tmp_path / "bob-3")
    actions = [(e["actor"], e["action"]) for e in audit.entries(home=home) if e["action"].startswith("job.")]
    assert actions == [("bob", "job.start"), ("ada", "job.cancel"), ("bob", "job.start"), ("bob", "job.start")]
    for job in Jobs(db, 1).list():
        if job.state == "queued":
            Jobs(db, 1).cancel(job.id)


def test_another_users_job_is_refused_through_the_api(home, tmp_path):
    from studio.jobs import Jobs

    run = home / "runs" / "generative" / "ada-secret-run"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "running", "step": 3, "steps": 10, "model": "vae"}')
    hers = Jobs(home / "jobs.sqlite", 1, user="ada").register("generate", ["generate", "train"], run,
                                                              state="running", pid=os.getpid())
    with serving(tmp_path, "serve", "--no-preload", env={"STUDIO_HOME": str(home)}) as url:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False)
        seen = json.dumps(bob.predict(job=hers.id, api_name="/generate_pick"))
        assert "ada-secret-run" not in seen and "No job selected" in seen
        with pytest.raises(Exception, match=f"no job '{hers.id}'"):  # noqa: PT011 - the client wraps it
            bob.predict(job=hers.id, api_name="/generate_cancel")
        with pytest.raises(Exception, match="Pick a job first"):  # noqa: PT011
            bob.predict(job=hers.id, n=4, api_name="/generate_sample")
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        assert "ada-secret-run" in json.dumps(ada.predict(job=hers.id,
                                                          api_name="/generate_pick"))
    assert Jobs(home / "jobs.sqlite", 1, user="ada").get(hers.id).state == "running"  # bob's cancel did nothing


def test_each_accounts_generations_take_turns_and_a_closed_page_gives_its_turn_back():
    import threading

    from studio.turns import Turns
    from studio.ui.wiring import _streamed_in_turn

    turns = Turns(per_user=1)
    first, second, bobs = turns.enter("ada"), turns.enter("ada"), turns.enter("bob")
    assert first.wait(0) and bobs.wait(0)  # bob does not wait behind ada
    assert not second.wait(0.05) and second.place() == 1
    threading.Timer(0.2, first.leave).start()
    assert second.wait(5) and second.place() == 0
    second.leave()
    bobs.leave()
    assert turns.active() == {}
    # a streaming handler holds the turn while it streams; closing it (Stop, or the page closed) gives it back
    held = turns.enter("ada")
    stream = _streamed_in_turn((turns, "stats"), "ada", lambda: iter([{"stats": "a"}, {"stats": "b"}]))
    assert next(stream) == {"stats": "*waiting for your other reply to finish: place 1 in your line*"}
    held.leave()
    assert next(stream) == {"stats": "a"} and turns.active() == {"ada": 1}
    stream.close()
    assert turns.active() == {}
    assert Turns().enter("local").wait(0) and Turns(per_user=1).enter("local").wait(0)  # not rationed


def test_a_second_chat_of_one_account_waits_its_turn_through_the_api(home, tmp_path):
    with serving(tmp_path, "--set", "generation.max_tokens=400", "serve", env={"STUDIO_HOME": str(home)}) as url:
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        story = "Write a long story about a lighthouse keeper and the sea, with many details."
        jobs = [ada.submit(message=story, api_name="/chat") for _ in range(2)]
        bob = Client(url, auth=("bob", "bob-password"), verbose=False).submit(message="Say hello.", api_name="/chat")
        for job in (*jobs, bob):
            job.result(timeout=300)
        stats = [[json.dumps(out[3]) for out in job.outputs()] for job in jobs]  # (states are not outputs)
        waited = [any("place 1 in your line" in s for s in seen) for seen in stats]
        assert sorted(waited) == [False, True], stats  # one of ada's two waited for the other
        assert not any("in your line" in json.dumps(out) for out in bob.outputs())
        assert all("tokens" in seen[-1] for seen in stats)  # and both were answered in the end


def test_closing_the_page_of_a_long_reply_gives_the_account_its_turn_back(home, tmp_path, browser):
    """ada starts a reply of up to 2000 tokens (minutes here) in one browser tab and closes the tab while it
    streams; her reply in another tab must not wait for the abandoned one."""
    with serving(tmp_path, "--set", "generation.max_tokens=2000", "serve", env={"STUDIO_HOME": str(home)}) as url:
        first = logged_in(browser, url, "ada")
        first.fill("#chat-input textarea", "Write a very long story about a lighthouse keeper, with many details.")
        first.click("#chat-send")
        try:
            first.wait_for_function("""() => { const b = document.querySelectorAll('#chatbot [data-testid="bot"]');
                return b.length && b[b.length - 1].innerText.trim().split(/\\s+/).length >= 5; }""", timeout=120_000)
        except Exception:
            first.screenshot(path="/tmp/ui_turn_fail.png", full_page=True)
            raise
        first.context.close()  # the tab is closed mid-reply
        second = logged_in(browser, url, "ada")
        second.fill("#chat-input textarea", "Say hello.")
        second.click("#chat-send")
        second.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tokens')",
                                 timeout=120_000)
        shown = second.inner_text("#chat-stats")
        assert "in your line" not in shown, shown
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        busy = ada.predict(actor="", action="", limit=5, api_name="/admin_overview")[3]
        assert "ada" not in json.dumps(busy), busy  # nothing of ada's is generating any more


def test_a_collection_and_an_accounts_daily_ingest_have_a_size_limit(home, embedder, tmp_path, monkeypatch):
    import dataclasses

    from studio import limits

    tight = dataclasses.replace(limits.current(), collection_chunks=3, ingest_mb_per_day=0.0005)  # 500 bytes
    monkeypatch.setattr(limits, "_active", tight)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A paragraph about lakes.")
    (docs / "b.txt").write_text("A paragraph about rivers.")
    (docs / "c.txt").write_text("A long paragraph about seas. " * 20)  # 580 bytes in one chunk
    local = Ingestor(IngestConfig(), embedder=embedder)
    (docs / "big.txt").write_text("Lakes and rivers. " * 400)  # several chunks: over the collection's 3
    report = local.ingest([docs / "a.txt", docs / "big.txt"], "local-small")
    assert [f.status for f in report.files] == ["added", "failed"]  # the file over the limit fails alone
    assert "the limit is 3 (limits.collection_chunks)" in report.files[1].error
    assert local.store.count("local-small") == 1
    # an account's bytes per day: bob's first small files fit, the next one does not
    bob = local.for_user("bob")
    report = bob.ingest([docs / "a.txt", docs / "b.txt", docs / "c.txt"], "bob-notes")
    assert [f.status for f in report.files[:2]] == ["added", "added"]
    assert report.files[2].status == "failed" and "limits.ingest_mb_per_day" in report.files[2].error
    assert [r.source for r in bob.documents("bob-notes")] == ["a.txt", "b.txt"]
    assert bob.ingest([docs / "a.txt"], "bob-notes").files[0].status == "unchanged"  # unchanged costs nothing


def test_the_admin_panel_and_the_audit_log_are_for_admins(home, embedder, tmp_path):
    Ingestor(IngestConfig(), embedder=embedder, user="bob").ingest([tmp_path / "lakes.txt"], "bob-lakes")
    env = {"STUDIO_HOME": str(home)}
    out = run_studio("--user", "bob", "audit", env=env)
    assert out.returncode == 2 and "the audit log is for admins" in out.stderr and "collection" not in out.stdout
    assert "collection.ingest" in run_studio("--user", "ada", "audit", env=env).stdout
    with serving(tmp_path, "serve", "--no-preload", env=env) as url:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False)
        with pytest.raises(Exception, match="The admin panel is for admins"):  # noqa: PT011 - wrapped by the client
            bob.predict(actor="", action="", limit=50, api_name="/admin_overview")
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        accounts, jobs, collections, busy, log = ada.predict(actor="bob", action="collection.", limit=50,
                                                             api_name="/admin_overview")
        assert [r[:2] for r in accounts["data"]] == [["ada", "admin"], ["bob", "member"]]
        assert [r[:3] for r in collections["data"]] == [["bob-lakes", "bob", "private"]]
        assert [r[1:4] for r in log["data"]] == [["bob", "collection.ingest", "bob-lakes"]]
        assert busy == "nobody is generating now"


def test_a_restart_loses_no_session_collection_or_job_and_running_jobs_go_on(home, embedder, tmp_path):
    from studio.jobs import Jobs

    env = {"STUDIO_HOME": str(home)}
    Ingestor(IngestConfig(), embedder=embedder, user="ada").ingest([tmp_path / "lakes.txt"], "ada-lakes")
    started = run_studio("--user", "ada", "generate", "train", "configs/generative/vae_moons.yaml", "steps=200000",
                         "--background", "--json", env=env)
    job = json.loads(started.stdout)["job_id"]
    try:
        with serving(tmp_path, "--set", "generation.max_tokens=16", "serve", env=env) as url:
            ada = Client(url, auth=("ada", "ada-password"), verbose=False)
            ada.predict(message="Hello there, studio.", api_name="/chat")
            before = json.dumps(ada.predict(api_name="/chat_lists"))
            assert "Hello there, studio." in before
        with serving(tmp_path, "serve", "--no-preload", env=env) as url:  # the same home, a new server process
            ada = Client(url, auth=("ada", "ada-password"), verbose=False)
            assert json.dumps(ada.predict(api_name="/chat_lists")) == before
            assert "ada-lakes" in json.dumps(ada.predict(api_name="/docs_load"))
            shown = json.dumps(ada.predict(job=job, api_name="/generate_pick"))
            assert "**running**" in shown and "vae on moons" in shown  # still training, across the restart
            bob = Client(url, auth=("bob", "bob-password"), verbose=False)
            assert job not in json.dumps(bob.predict(job=job, api_name="/generate_pick"))
        assert Jobs(user="ada").get(job).state == "running"
    finally:
        Jobs(user="ada").cancel(job)
        assert Jobs(user="ada").wait(job, timeout=120).state == "cancelled"


def test_pages_opening_at_the_same_moment_on_an_older_studio_all_load(tmp_path):
    # eight people opening the page at once on a studio whose stores predate a column each checked for
    # the column and added it: all but the first failed with "duplicate column name" (found by
    # benchmarks/shared_load.py as a user who could not connect); and switching each store to WAL at once
    # failed with "database is locked"
    import sqlite3
    import threading

    from ingest.manifest import Manifest
    from studio import jobs
    from studio.rag.sessions import Sessions

    def older_stores(d):
        d.mkdir()
        for name, ddl in (("jobs.sqlite", "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT, run_dir TEXT, argv "
                           "TEXT, state TEXT, pid INTEGER, created REAL, started REAL, ended REAL, error TEXT)"),
                          ("sessions.sqlite", "CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, collection "
                           "TEXT, created REAL, updated REAL, titled INTEGER NOT NULL DEFAULT 0)")):
            with sqlite3.connect(d / name) as db:
                db.execute(ddl)

    failures = []
    for attempt in range(12):
        d = tmp_path / str(attempt)
        older_stores(d)
        start = threading.Barrier(8)

        def open_page(d=d, start=start):
            start.wait()
            try:
                jobs.Jobs(db=d / "jobs.sqlite").list()
                Sessions(d / "sessions.sqlite").list()
                Manifest(d / "manifest.sqlite")
            except Exception as exc:  # noqa: BLE001 - what the page would have shown
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_page) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    with sqlite3.connect(tmp_path / "0" / "jobs.sqlite") as db:
        assert {"owner", "pid_started"} <= {r[1] for r in db.execute("PRAGMA table_info(jobs)")}


def test_another_users_adapter_and_eval_runs_are_refused_through_the_api(home, tmp_path):
    from studio.jobs import Jobs

    run = home / "runs" / "finetune" / "ada-tuned-run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "status.json").write_text('{"state": "done", "task": "generation", "base_model": "smollm2-135m-instruct"}')
    Jobs(home / "jobs.sqlite", 1, user="ada").register("finetune", ["finetune", "train"], run, state="done")
    report = home / "eval" / "ada-suite-20261129-000000"
    report.mkdir(parents=True)
    (report / "report.json").write_text("{}")
    (report / "owner").write_text("ada")
    suite = sorted((Path(__file__).parents[1] / "configs" / "eval").glob("*.yaml"))[0].stem
    with serving(tmp_path, "serve", "--no-preload", env={"STUDIO_HOME": str(home)}) as url:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False)
        assert "ada-tuned-run" not in json.dumps(bob.predict(api_name="/chat_lists"))
        assert report.name not in json.dumps(bob.predict(api_name="/eval_lists"))
        # refused by the page's picker (Gradio checks a dropdown's value) or by the handler's own check
        with pytest.raises(Exception, match="one of your finished fine-tunes|not in the list of choices"):  # noqa: PT011
            bob.predict(adapter=str(run / "adapter"), api_name="/pick_adapter")
        with pytest.raises(Exception, match="the earlier run must be one of|not in the list of choices"):  # noqa: PT011
            bob.predict(suite=suite, upload=None, overrides="", baseline=report.name, api_name="/eval_run")
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        assert "ada-tuned-run" in json.dumps(ada.predict(api_name="/chat_lists"))
        assert report.name in json.dumps(ada.predict(api_name="/eval_lists"))
    assert not any(p.name != report.name for p in (home / "eval").iterdir())  # bob's refused run left nothing
