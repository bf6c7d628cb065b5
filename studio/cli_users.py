"""`studio users add|list|passwd|rm` and `studio audit`: the accounts of a shared studio
(:mod:`studio.accounts`) and its audit log (:mod:`studio.audit`).

A password never comes from the command line (other users of the machine can read every process's
arguments): it is asked for twice on a terminal, read as two lines (the password, then the same
again) from stdin when stdin is not a terminal, or taken from ``$STUDIO_PASSWORD``.
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from studio import audit
from studio.accounts import Accounts
from studio.errors import StudioError


def add_parsers(sub) -> None:
    p = sub.add_parser("users", help="accounts of a shared studio (once one exists, serve requires login)",
                       description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add an account (the first must be --admin)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage accounts, publish collections, see all jobs")
    add.set_defaults(handler=cmd_add)
    ls = verbs.add_parser("list", help="the accounts, with their roles")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    pw = verbs.add_parser("passwd", help="set an account's password")
    pw.add_argument("name")
    pw.set_defaults(handler=cmd_passwd)
    rm = verbs.add_parser("rm", help="remove an account")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_rm)
    au = sub.add_parser("audit", help="who added, removed or logged in to what (the shared studio's log)")
    au.add_argument("--limit", type=int, default=50, help="the last this many entries (default 50)")
    au.add_argument("--actor", help="only this account's entries")
    au.add_argument("--action", help="only actions starting with this, e.g. login")
    au.add_argument("--json", action="store_true")
    au.set_defaults(handler=cmd_audit)


def read_password(name: str) -> str:
    """The new password for ``name``: $STUDIO_PASSWORD, a prompt (twice), or two lines of stdin."""
    if os.environ.get("STUDIO_PASSWORD"):
        return os.environ["STUDIO_PASSWORD"]
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        again = getpass.getpass("the same again: ")
    else:
        first, again = sys.stdin.readline().rstrip("\r\n"), sys.stdin.readline().rstrip("\r\n")
        if not first:
            raise StudioError("no password on stdin: send it as two lines (the password, then the same again), "
                              "or set $STUDIO_PASSWORD")
    if first != again:
        raise StudioError("the two passwords differ; nothing was changed")
    return first


def cmd_add(args) -> int:
    account = Accounts(actor=args.user).add(args.name, read_password(args.name), admin=args.admin)
    print(f"added {account.name}{' (admin)' if account.admin else ''}; `studio serve` now requires login")
    return 0


def cmd_list(args) -> int:
    accounts = Accounts().list()
    if args.json:
        print(json.dumps([{"name": a.name, "admin": a.admin, "created": a.created} for a in accounts]))
        return 0
    if not accounts:
        print("no accounts: the studio is a one-user local studio (add one with `studio users add NAME --admin`)")
    for a in accounts:
        print(f"{a.name:24} {'admin' if a.admin else 'member':7} created {a.created}")
    return 0


def cmd_passwd(args) -> int:
    accounts = Accounts(actor=args.user)
    if accounts.get(args.name) is None:
        raise StudioError(f"no account {args.name!r}; see `studio users list`")
    accounts.passwd(args.name, read_password(args.name))
    print(f"password of {args.name} changed")
    return 0


def cmd_rm(args) -> int:
    Accounts(actor=args.user).remove(args.name)
    print(f"removed {args.name}")
    return 0


def cmd_audit(args) -> int:
    if not Accounts().is_admin(args.user):
        raise StudioError("the audit log is for admins; ask one, or run `studio audit` as the studio's owner")
    rows = audit.entries(args.limit, args.actor, args.action)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("the audit log is empty")
    for e in rows:
        extra = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "actor", "action", "target"))
        print(f"{e['time']}  {e['actor']:16} {e['action']:16} {e['target']} {extra}".rstrip())
    return 0
