"""Accounts of a shared studio: CRUD, slow salted hashes, passwords never on argv, login required."""

from __future__ import annotations

import json
import stat

import pytest

from studio.accounts import MAX_FAILURES, Accounts, verify_password
from studio.config import ServerConfig
from studio.errors import StudioError
from tests.conftest import logged_in, run_studio, serving


def test_accounts_are_kept_as_slow_salted_hashes_in_a_private_file(tmp_path):
    accounts = Accounts(tmp_path)
    assert not accounts.exist()
    with pytest.raises(StudioError, match="first account must be an admin"):
        accounts.add("bob", "bob-password")
    accounts.add("ada", "ada-password", admin=True)
    accounts.add("bob", "bob-password")
    text = (tmp_path / "users.json").read_text()
    assert "ada-password" not in text and "bob-password" not in text
    stored = json.loads(text)["users"]
    assert stored["ada"]["hash"].startswith("scrypt$16384$8$1$")
    assert stored["ada"]["hash"] != Accounts(tmp_path)._read()["bob"]["hash"]
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert [(a.name, a.admin) for a in accounts.list()] == [("ada", True), ("bob", False)]
    assert accounts.check("ada", "ada-password") and not accounts.check("ada", "bob-password")
    assert not accounts.check("nobody", "ada-password")
    # the same password twice gives two hashes (salted), and both verify
    a, b = (Accounts(tmp_path / d) for d in ("x", "y"))
    for acc in (a, b):
        (tmp_path / acc.path.parent.name).mkdir()
        acc.add("ada", "same-password", admin=True)
    ha, hb = a._read()["ada"]["hash"], b._read()["ada"]["hash"]
    assert ha != hb and verify_password("same-password", ha) and verify_password("same-password", hb)

    accounts.passwd("bob", "new-bob-password")
    assert accounts.check("bob", "new-bob-password") and not accounts.check("bob", "bob-password")
    with pytest.raises(StudioError, match="only admin"):
        accounts.remove("ada")
    accounts.remove("bob")
    assert [a.name for a in accounts.list()] == ["ada"]
    with pytest.raises(StudioError, match="exists"):
        accounts.add("ada", "another-password", admin=True)


@pytest.mark.parametrize("name", ["../etc", "Ada", "a" * 33, "", "ada bob", "1ada"])
def test_account_names_are_plain(tmp_path, name):
    with pytest.raises(StudioError, match="account name"):
        Accounts(tmp_path).add(name, "long-enough-pw", admin=True)
    assert not Accounts(tmp_path).exist()


def test_short_passwords_are_refused_and_guessing_is_throttled(tmp_path):
    accounts = Accounts(tmp_path)
    with pytest.raises(StudioError, match="8 to 256"):
        accounts.add("ada", "short", admin=True)
    accounts.add("ada", "the-real-password", admin=True)
    for _ in range(MAX_FAILURES):
        assert not accounts.check("ada", "a-wrong-guess")
    assert not accounts.check("ada", "the-real-password")  # locked for the window, even with the right one
    assert Accounts(tmp_path).check("ada", "the-real-password")  # (a restarted server starts afresh)


def test_cli_reads_passwords_from_stdin_or_the_environment_never_argv(tmp_path):
    env = {"STUDIO_HOME": str(tmp_path)}
    out = run_studio("users", "add", "ada", "--admin", env=env, input="pw-for-ada-1\npw-for-ada-1\n")
    assert out.returncode == 0, out.stderr
    out = run_studio("users", "add", "bob", env=env, input="pw-for-bob-1\npw-for-bob-2\n")
    assert out.returncode == 2 and "differ" in out.stderr
    out = run_studio("users", "add", "bob", "pw-for-bob-1", env=env)  # a password on argv is not an option
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr
    out = run_studio("users", "add", "bob", env={**env, "STUDIO_PASSWORD": "pw-from-env"}, input="")
    assert out.returncode == 0, out.stderr
    listed = json.loads(run_studio("users", "list", "--json", env=env).stdout)
    assert [(u["name"], u["admin"]) for u in listed] == [("ada", True), ("bob", False)]
    assert Accounts(tmp_path).check("bob", "pw-from-env") and Accounts(tmp_path).check("ada", "pw-for-ada-1")
    assert run_studio("users", "passwd", "bob", env=env, input="pw-new-bob-1\npw-new-bob-1\n").returncode == 0
    assert Accounts(tmp_path).check("bob", "pw-new-bob-1")
    assert run_studio("users", "rm", "bob", env=env).returncode == 0
    assert "bob" not in run_studio("users", "list", env=env).stdout


def test_accounts_open_sharing_and_replace_the_shared_password(tmp_path):
    accounts = Accounts(tmp_path)
    with pytest.raises(StudioError, match="studio users add"):
        ServerConfig(host="0.0.0.0").login(accounts)
    accounts.add("ada", "ada-password", admin=True)
    check = ServerConfig(host="0.0.0.0", share=True).login(accounts)
    assert check("ada", "ada-password") and not check("ada", "nope-nope-nope")
    with pytest.raises(StudioError, match="has accounts"):
        ServerConfig(auth="teacher:secret").login(accounts)
    assert ServerConfig(auth="teacher:secret").login(Accounts(tmp_path / "none")) == ("teacher", "secret")


def test_serve_requires_login_once_accounts_exist(tmp_path):
    from gradio_client import Client

    home = tmp_path / "home"
    home.mkdir()
    Accounts(home).add("ada", "ada-password", admin=True)
    with serving(tmp_path, "serve", "--no-preload", env={"STUDIO_HOME": str(home)}) as url:
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "config", timeout=10)
        assert denied.value.code == 401
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own kinds
            Client(url, verbose=False)
        with pytest.raises(Exception):  # noqa: B017
            Client(url, auth=("ada", "wrong-password"), verbose=False)
        client = Client(url, auth=("ada", "ada-password"), verbose=False)
        assert "/header" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert isinstance(client.predict(api_name="/header"), str)


def test_account_changes_and_logins_are_audited_without_secrets(tmp_path):
    from studio import audit

    env = {"STUDIO_HOME": str(tmp_path)}
    assert run_studio("users", "add", "ada", "--admin", env=env, input="pw-for-ada-1\npw-for-ada-1\n").returncode == 0
    accounts = Accounts(tmp_path)
    accounts.add("bob", "pw-for-bob-1")
    assert accounts.check("bob", "pw-for-bob-1") and not accounts.check("bob", "a-wrong-guess")
    assert not accounts.check("pw-typed-as-name", "x" * 9)
    accounts.remove("bob")
    got = [(e["actor"], e["action"], e["target"]) for e in audit.entries(home=tmp_path)]
    assert got == [("local", "users.add", "ada"), ("local", "users.add", "bob"), ("bob", "login", ""),
                   ("bob", "login.failed", ""), ("?", "login.failed", ""), ("local", "users.rm", "bob")]
    text = (tmp_path / "audit.jsonl").read_text()
    assert "pw-" not in text and "wrong-guess" not in text
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600
    shown = run_studio("audit", "--action", "login", "--json", env=env)
    assert [e["action"] for e in json.loads(shown.stdout)] == ["login", "login.failed", "login.failed"]
    assert "users.rm" in run_studio("audit", env=env).stdout
    assert [e["action"] for e in audit.entries(home=tmp_path, actor="bob")] == ["login", "login.failed"]


def two_accounts(tmp_path):
    """A studio home with accounts ada (admin) and bob, and its chat sessions."""
    from studio.rag.sessions import Sessions

    home = tmp_path / "home"
    home.mkdir()
    accounts = Accounts(home)
    accounts.add("ada", "ada-password", admin=True)
    accounts.add("bob", "bob-password")
    return home, Sessions(home / "sessions.sqlite")


def test_chat_sessions_are_private_to_their_owner_through_the_api(tmp_path):
    # ada's chat, then bob (another account) calls the endpoints behind the page directly with her id
    from gradio_client import Client


    home, sessions = two_accounts(tmp_path)
    sid = sessions.create(user="ada").id
    sessions.add_message(sid, "user", "ADA-PRIVATE question about lemurs", user="ada")
    sessions.add_message(sid, "assistant", "ADA-PRIVATE answer", user="ada")
    with serving(tmp_path, "serve", "--no-preload", env={"STUDIO_HOME": str(home)}) as url:
        bob = Client(url, auth=("bob", "bob-password"), verbose=False)
        listed = json.dumps(bob.predict(api_name="/chat_lists"))
        assert sid not in listed and "lemurs" not in listed
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the client wraps the server's error
            bob.predict(session_pick=sid, api_name="/open_session")  # (Gradio's own choice check refuses first)
        assert "lemurs" not in str(refused.value) and "ADA-PRIVATE" not in str(refused.value)
        ada = Client(url, auth=("ada", "ada-password"), verbose=False)
        assert sid in json.dumps(ada.predict(api_name="/chat_lists"))
        opened = json.dumps(ada.predict(session_pick=sid, api_name="/open_session"))
        assert "lemurs" in opened
    # nothing bob did changed ada's chat, and the core refuses him too
    assert [m["content"] for m in sessions.messages(sid, "ada")][0].startswith("ADA-PRIVATE")
    for act in (lambda: sessions.get(sid, "bob"), lambda: sessions.delete(sid, "bob"),
                lambda: sessions.rename(sid, "mine now", "bob"), lambda: sessions.messages(sid, "bob"),
                lambda: sessions.add_message(sid, "user", "hi", user="bob"), lambda: sessions.export_json(sid, "bob")):
        with pytest.raises(StudioError, match="no chat session"):
            act()
    assert sessions.list("bob") == [] and [s.id for s in sessions.list("ada")] == [sid]


def test_cli_acts_as_a_named_user(tmp_path):
    from studio.rag.sessions import Sessions

    env = {"STUDIO_HOME": str(tmp_path)}
    accounts = Accounts(tmp_path)
    accounts.add("ada", "ada-password", admin=True)
    sessions = Sessions(tmp_path / "sessions.sqlite")
    mine, hers = sessions.create("local chat").id, sessions.create("ada's chat", user="ada").id
    assert [s["id"] for s in json.loads(run_studio("sessions", "list", "--json", env=env).stdout)] == [mine]
    as_ada = run_studio("--user", "ada", "sessions", "list", "--json", env=env)
    assert [s["id"] for s in json.loads(as_ada.stdout)] == [hers]
    out = run_studio("sessions", "rm", hers, env=env)
    assert out.returncode == 2 and "no chat session" in out.stderr
    out = run_studio("--user", "zed", "sessions", "list", env=env)
    assert out.returncode == 2 and "no account 'zed'" in out.stderr


def test_two_people_in_two_browsers_each_see_only_their_own_chats(tmp_path, browser):

    home, sessions = two_accounts(tmp_path)
    sessions.add_message(sessions.create(user="ada").id, "user", "Ada asks about lemurs", user="ada")
    sessions.add_message(sessions.create(user="bob").id, "user", "Bob asks about otters", user="bob")
    with serving(tmp_path, "--set", "generation.max_tokens=16", "serve", "--no-preload",
                 env={"STUDIO_HOME": str(home)}) as url:
        pages = {name: logged_in(browser, url, name, height=1500) for name in ("ada", "bob")}
        # each sends a message through the page: the new chat is saved in the sender's workspace
        for name, page in pages.items():
            page.fill("#chat-input textarea", f"{name.title()} says hello to the studio")
            page.click("#chat-send")
        for page in pages.values():
            page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tokens')",
                                   timeout=120_000)
        # the Admin tab is shown to the admin only (its endpoints refuse the others: tests/test_workspaces.py);
        # checked after a whole reply, so bob's page load (which would show it) has long been answered
        pages["ada"].get_by_role("tab", name="Admin").wait_for(timeout=30_000)
        assert pages["bob"].get_by_role("tab", name="Admin").count() == 0
        for name, page in pages.items():
            page.get_by_text("Sessions", exact=True).click()
            page.click("#chat-session input")
            options = page.locator("ul[role=listbox] li")
            options.first.wait_for(timeout=10_000)
            shown = " | ".join(options.all_inner_texts())
            other = "bob" if name == "ada" else "ada"
            assert f"{name.title()} says hello" in shown and f"{other.title()} says hello" not in shown, shown
            assert ("lemurs" in shown) == (name == "ada") and ("otters" in shown) == (name == "bob"), shown
    assert {s.title for s in sessions.list("bob")} == {"Bob asks about otters", "Bob says hello to the studio"}
