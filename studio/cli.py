"""The ``studio`` command: a thin front end over the core, mirroring the web UI.

Heavy libraries (torch, transformers, gradio, llama.cpp) are imported inside the command that
needs them, so ``studio --help`` answers at once. Errors the user can fix print one line on
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

from studio.config import read_secret
from studio.env import apply_offline_defaults
from studio.errors import StudioError

Handler = Callable[[argparse.Namespace], int]


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Backend and generation options shared by chat, ask and prompt commands."""
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=["llamacpp", "hf", "openai"], help="default: from config (llamacpp)")
    g.add_argument("--model", help="registry name, .gguf file, HF folder, or the endpoint's model name")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key", help="for the openai backend; visible in the process list, so prefer "
                   "--api-key-file or $STUDIO_API_KEY (the configured key goes to chat.base_url only)")
    g.add_argument("--api-key-file", metavar="FILE", help="read the API key from the first line of FILE")
    g.add_argument("--adapter", metavar="RUN", help="a fine-tune run (or its adapter/ folder): LoRA on the hf backend")
    g.add_argument("--system", help="system prompt")
    s = p.add_argument_group("generation")
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--top-k", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--stop", action="append", help="stop string (repeatable)")


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

    from studio import cli_docs

    cli_docs.add_parsers(sub, load_studio_config)
    from studio import cli_rag

    cli_rag.add_parsers(sub, load_studio_config, add_model_options)
    from studio import cli_prompt, cli_sample

    cli_prompt.add_parsers(sub, load_studio_config, add_model_options)

    cli_sample.add_parsers(sub)
    from studio import cli_eval, cli_finetune, cli_generate

    cli_eval.add_parsers(sub)
    cli_generate.add_parsers(sub)
    cli_finetune.add_parsers(sub)

    models = sub.add_parser("models", help="the bundled models and where they are")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=cmd_models)
    return parser


def load_studio_config(args: argparse.Namespace):
    """The studio config (file, then --set overrides); its limits become the ones the core enforces."""
    from studio.config import StudioConfig, load_config
    from studio.limits import configure

    cfg = load_config(StudioConfig, getattr(args, "studio_config", None) or os.environ.get("STUDIO_CONFIG"),
                      args.set)
    configure(cfg.limits)
    return cfg


def backend_from_args(args: argparse.Namespace, cfg):
    """The backend the options (over the config) ask for."""
    from studio.backends import load_backend

    c = cfg.chat
    backend = args.backend or c.backend
    if getattr(args, "adapter", None):
        from finetune.adapters import adapter_of

        a = adapter_of(args.adapter)
        if args.backend not in (None, "hf"):
            raise StudioError("--adapter needs the hf backend (a LoRA adapter applies to transformers models)")
        if a.task != "generation":
            raise StudioError(f"{a.name} is a {a.task} adapter; chat needs a generation one")
        return load_backend("hf", args.model or a.base_model, adapter=str(a.path),
                            n_threads=c.n_threads or None)
    url = args.base_url or c.base_url
    explicit = args.api_key or (read_secret(args.api_key_file, "API key") if args.api_key_file else None)
    # a key given for this command goes with it; the configured one only to the configured endpoint
    key = explicit or (c.key() if not args.base_url or args.base_url == c.base_url else None)
    return load_backend(
        backend,
        args.model or c.model,
        base_url=url,
        api_key=key,
        n_ctx=c.n_ctx if backend == "llamacpp" else None,
        n_threads=c.n_threads or None,
        parallel=c.parallel if backend == "llamacpp" else None,
        timeout=c.timeout if backend == "openai" else None,
    )


def settings_from_args(args: argparse.Namespace, cfg, **extra):
    from studio.backends import settings_from_config

    return settings_from_config(
        cfg.generation, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed, max_tokens=args.max_tokens, stop=args.stop, **extra,
    )


def messages_for(text: str, system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": text}]


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


def cmd_models(args: argparse.Namespace) -> int:
    from studio.registry import describe

    rows = describe()
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['name']:24} {row['format']:5} {row['description']}\n{'':30} {row['path']}")
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
    s.login()  # refuse a share without auth before the slow UI imports
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
