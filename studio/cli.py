"""The ``studio`` command: a thin front end over the core, mirroring the web UI.

Heavy libraries (torch, transformers, gradio, llama.cpp) are imported inside the command that
needs them, so ``studio --help`` answers at once. Shared helpers live in :mod:`studio.cli_common`;
the command modules import it, and only this module imports them. Errors the user can fix print one line on
stderr and exit with code 2; ``--json`` output goes to stdout and nothing else does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from studio import (
    cli_docs,
    cli_eval,
    cli_finetune,
    cli_generate,
    cli_models,
    cli_prompt,
    cli_rag,
    cli_sample,
    cli_users,
)
from studio.accounts import Accounts
from studio.cli_common import (
    add_model_options,
    backend_from_args,
    load_studio_config,
    messages_for,
    settings_from_args,
)
from studio.config import read_secret
from studio.env import LOCAL_USER, apply_offline_defaults
from studio.errors import StudioError

Handler = Callable[[argparse.Namespace], int]




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="GenAI Studio: local-first RAG, prompting, fine-tuning and generative models. "
        "With no command, starts the web UI.",
    )
    parser.add_argument("--config", dest="studio_config",
                        help="a studio YAML (default: $STUDIO_CONFIG or built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set generation.temperature=0.2")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    parser.add_argument("--user", default=LOCAL_USER, metavar="NAME",
                        help="act in this account's workspace (default: the machine user's own, 'local')")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="the Gradio web UI (default 127.0.0.1:7860)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--share", action="store_true", default=None,
                       help="also open a public Gradio link (needs --auth and internet)")
    serve.add_argument("--auth", metavar="USER:PASS", help="require this login (visible in the process list: "
                       "prefer $STUDIO_AUTH or --auth-file)")
    serve.add_argument("--auth-file", metavar="FILE", help="read USER:PASS from the first line of FILE")
    serve.add_argument("--no-preload", action="store_true", help="load the chat model on first use")
    serve.set_defaults(handler=cmd_serve)

    chat = sub.add_parser("chat", help="one chat turn with a model, no retrieval")
    chat.add_argument("message", help="what to say")
    add_model_options(chat)
    chat.add_argument("--json-schema", metavar="FILE", help="constrain the reply to this JSON schema")
    chat.add_argument("--json", action="store_true", help="print one JSON document")
    chat.set_defaults(handler=cmd_chat)

    for module in (cli_docs, cli_rag, cli_prompt, cli_sample, cli_eval, cli_generate, cli_finetune, cli_users,
                   cli_models):
        module.add_parsers(sub)

    return parser










def cmd_chat(args: argparse.Namespace) -> int:
    cfg = load_studio_config(args)
    schema = None
    if args.json_schema:
        try:
            with open(args.json_schema, encoding="utf-8") as fh:
                schema = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise StudioError(f"cannot read the JSON schema {args.json_schema}: {exc}") from None
    settings = settings_from_args(args, cfg, json_schema=schema)
    backend = backend_from_args(args, cfg)
    stream = backend.stream(messages_for(args.message, args.system or cfg.chat.system_prompt), settings)
    if args.json:
        stream.consume()
        print(json.dumps({
            "text": stream.text,
            "model": backend.model_name,
            "backend": backend.name,
            "completion_tokens": stream.completion_tokens,
            "seconds": round(stream.seconds, 3),
            "first_token_seconds": round(stream.first_token_seconds or 0.0, 3),
            "tokens_per_second": round(stream.tokens_per_second, 2),
            "seed": settings.seed,
        }))
    else:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_studio_config(args)
    s = cfg.server
    s.host = args.host or s.host
    s.port = args.port or s.port
    s.share = bool(args.share) if args.share is not None else s.share
    s.auth = args.auth or (read_secret(args.auth_file, "auth") if args.auth_file else None) \
        or os.environ.get("STUDIO_AUTH") or s.auth
    if args.no_preload:
        s.preload = False
    s.login(Accounts())  # refuse a share without a login before the slow UI imports
    from studio.ui.app import serve

    serve(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    apply_offline_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "studio_config", None):  # background jobs and their children read the same config
        os.environ["STUDIO_CONFIG"] = str(Path(args.studio_config).resolve())
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = getattr(args, "handler", None) or cmd_serve
    if args.command is None:  # plain `studio` serves the UI with the configured defaults
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "serve"])
    try:
        if args.user != LOCAL_USER and Accounts().get(args.user) is None:
            raise StudioError(f"no account {args.user!r}; see `studio users list`")
        load_studio_config(args)  # every command enforces the configured limits (and checks the config)
        return handler(args)
    except StudioError as exc:
        print(f"studio: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("studio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
