"""`studio models list|info|import|pull|rm|use|roles`: the installed models (:mod:`studio.modelstore`).

A pulled or imported model is then usable by name everywhere a model is asked for, e.g.
``studio chat "hello" --model qwen2.5-0.5b-instruct-q4_k_m``; ``studio models use NAME --role chat`` makes it
the default of Chat and every command (saved in STUDIO_HOME/settings.yaml, the config's saved layer).
"""

from __future__ import annotations

import argparse
import json

from studio.cli_common import load_studio_config
from studio.env import LOCAL_USER

KIND_LABELS = {"chat-gguf": "chat (GGUF)", "chat-hf": "chat (HF folder)", "embedding": "embedding",
               "lora-adapter": "LoRA adapter"}


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="installed models: list, info, import, pull from a hub, rm",
                       description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="(with no verb) the list as JSON")
    p.set_defaults(handler=cmd_list, kind=None, suggest=False)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    ls = verbs.add_parser("list", help="bundled, pulled and imported models and fine-tuned adapters")
    ls.add_argument("--kind", choices=sorted(KIND_LABELS), help="only models of this kind")
    ls.add_argument("--suggest", action="store_true", help="also the recommended models one can pull")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    inf = verbs.add_parser("info", help="one model: kind, size, RAM estimate, licence, source, header facts")
    inf.add_argument("name")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(handler=cmd_info)
    imp = verbs.add_parser("import", help="copy a .gguf file or a Hugging Face model folder into the studio")
    imp.add_argument("path")
    imp.add_argument("--name", help="the name to use it by (default: from the file or folder name)")
    imp.add_argument("--link", action="store_true", help="link to the original instead of copying it")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=cmd_import)
    pl = verbs.add_parser("pull", help="download a GGUF file (or a model folder) from the model hub ($HF_ENDPOINT)")
    pl.add_argument("repo", help="OWNER/NAME, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    pl.add_argument("file", nargs="?", help="the .gguf file in the repo (needed when it holds several)")
    pl.add_argument("--name", help="the name to use it by (default: from the file name)")
    pl.add_argument("--revision", help="a branch, tag or commit (default: the repo's main branch)")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(handler=cmd_pull)
    rm = verbs.add_parser("rm", help="delete a pulled or imported model")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_rm)
    use = verbs.add_parser("use", help="make an installed chat model the one a role uses (saved)")
    use.add_argument("name")
    use.add_argument("--role", default="chat", choices=["chat", "prompt", "judge", "embedding"],
                     help="chat: Chat and every command; prompt: the Prompt Lab; judge: the llm groundedness "
                          "scorer; embedding: new collections (existing ones keep theirs: `studio docs reembed`)")
    use.set_defaults(handler=cmd_use)
    roles = verbs.add_parser("roles", help="which model each role uses")
    roles.add_argument("--json", action="store_true")
    roles.set_defaults(handler=cmd_roles)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n else "-"


def _row(m) -> dict:
    """A model as JSON: the store's fields plus the older list's ``format`` and ``description``."""
    row = m.row()
    row["format"] = "gguf" if str(row["path"]).endswith(".gguf") else "hf"
    row["description"] = row["source"]
    row.pop("details", None)
    return row


def cmd_list(args: argparse.Namespace) -> int:
    from studio.modelhub import SUGGESTED
    from studio.modelstore import list_models

    models = list_models(user=getattr(args, "user", LOCAL_USER), kind=args.kind)
    if args.json:
        print(json.dumps([_row(m) for m in models] if not args.suggest else
                         {"installed": [_row(m) for m in models], "suggested": SUGGESTED}))
        return 0
    width = max([len(m.name) for m in models] + [10])
    print(f"{'NAME':<{width}}  {'KIND':<16} {'SIZE':>9} {'RAM':>9}  {'LICENCE':<14} SOURCE")
    for m in models:
        print(f"{m.name:<{width}}  {KIND_LABELS[m.kind]:<16} {_mb(m.size):>9} {_mb(m.ram):>9}  "
              f"{m.licence[:14]:<14} {m.source}")
    if args.suggest:
        print("\nsuggested (pull with `studio models pull REPO FILE`; not shipped):")
        for s in SUGGESTED:
            print(f"  {s['repo']} {s['file'] or ''}\n    {s['kind']}, {s['licence']}, {s['size']} on disk, "
                  f"RAM {s['ram']}: {s['why']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from studio.modelstore import info

    m = info(args.name, user=args.user)
    if args.json:
        print(json.dumps(_row(m) | {"details": m.details}, default=str))
        return 0
    print(f"{m.name}: {KIND_LABELS[m.kind]}\n  path     {m.path}\n  size     {_mb(m.size)}\n"
          f"  RAM      {_mb(m.ram)} (estimated, one conversation)\n  licence  {m.licence}\n  source   {m.source}")
    for key, value in (m.details.get("facts") or {}).items():
        if value not in (None, "", []):
            print(f"  {key:<24} {value}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from studio.modelstore import import_model

    m = import_model(args.path, args.name, link=args.link, user=args.user)
    print(json.dumps(_row(m)) if args.json else f"imported {m.name} ({KIND_LABELS[m.kind]}, {_mb(m.size)}); "
          f"use it with --model {m.name}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from studio.modelhub import pull

    m = pull(args.repo, args.file, name=args.name, revision=args.revision, user=args.user)
    print(json.dumps(_row(m)) if args.json else f"pulled {m.name} ({KIND_LABELS[m.kind]}, {_mb(m.size)}, "
          f"licence {m.licence or 'unknown'}, checksum checked); use it with --model {m.name}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from studio.modelstore import remove, roles_of

    remove(args.name, user=args.user, in_use=roles_of(load_studio_config(args)))
    print(f"removed {args.name}")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    from studio.modelstore import ROLE_HELP, set_role

    set_role(args.role, args.name, load_studio_config(args), user=args.user)
    print(f"{ROLE_HELP[args.role]} now uses {args.name} (saved in the studio home's settings.yaml)")
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    from studio.modelstore import ROLE_HELP, roles_of

    roles = roles_of(load_studio_config(args))
    if args.json:
        print(json.dumps(roles))
    else:
        for role, model in roles.items():
            print(f"{role:<9} {model:<28} {ROLE_HELP[role]}")
    return 0
