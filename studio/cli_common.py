"""What the `studio` subcommands share: the studio config, model and generation options, batch files,
the ingestor, and running a training command in the foreground or as a background job.

The command modules (`cli_docs`, `cli_rag`, `cli_prompt`, ...) import this module; `studio.cli`
imports them; nothing here imports `studio.cli`, so imports go one way.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from studio.config import read_secret
from studio.env import LOCAL_USER, studio_home
from studio.errors import StudioError


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Backend and generation options shared by chat, ask and prompt commands."""
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=["llamacpp", "hf", "openai"], help="default: from config (llamacpp)")
    g.add_argument("--model", help="registry name, .gguf file, HF folder, or the endpoint's model name")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key", help="for the openai backend; visible in the process list, so prefer "
                   "--api-key-file or $STUDIO_API_KEY (the configured key goes to chat.base_url only)")
    g.add_argument("--api-key-file", metavar="FILE", help="read the API key from the first line of FILE")
    g.add_argument("--adapter", metavar="RUN", help="a fine-tune run (or its adapter/ folder): its LoRA on "
                   "llama.cpp once exported (`finetune export RUN --format gguf`), else on the hf backend")
    g.add_argument("--system", help="system prompt")
    s = p.add_argument_group("generation")
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--top-k", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--stop", action="append", help="stop string (repeatable)")


def load_studio_config(args: argparse.Namespace):
    """The studio config (file, then the settings saved in the studio home, then --set overrides); its limits
    become the ones the core enforces."""
    from studio.config import StudioConfig, load_config, read_settings
    from studio.limits import configure

    cfg = load_config(StudioConfig, getattr(args, "studio_config", None) or os.environ.get("STUDIO_CONFIG"),
                      getattr(args, "set", []), saved=read_settings(studio_home()))
    configure(cfg.limits)
    return cfg


def backend_from_args(args: argparse.Namespace, cfg, role: str = "chat"):
    """The backend the options (over the config) ask for; ``role="prompt"`` starts from the Prompt Lab's model
    (chat.prompt_model) when one is set."""
    from studio.backends import load_backend
    from studio.registry import backend_for

    c = cfg.chat
    chosen = c.prompt_model if role == "prompt" and c.prompt_model and not args.model else None
    backend = args.backend or (backend_for(chosen) if chosen else c.backend)
    if getattr(args, "adapter", None):
        from finetune.adapters import adapter_of

        a = adapter_of(args.adapter)
        backend, loads = a.serving(args.backend)
        return load_backend(backend, args.model or a.base_model, adapter=loads, n_threads=c.n_threads or None,
                            n_ctx=c.n_ctx if backend == "llamacpp" else None)
    url = args.base_url or c.base_url
    explicit = args.api_key or (read_secret(args.api_key_file, "API key") if args.api_key_file else None)
    # a key given for this command goes with it; the configured one only to the configured endpoint
    key = explicit or (c.key() if not args.base_url or args.base_url == c.base_url else None)
    return load_backend(
        backend,
        args.model or chosen or c.model,
        base_url=url,
        api_key=key,
        n_ctx=c.n_ctx if backend == "llamacpp" else None,
        n_threads=c.n_threads or None,
        parallel=1 if backend == "llamacpp" else None,  # a command answers one conversation at a time
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


def make_ingestor(args, cfg):
    """An :class:`Ingestor` from the config with the command's store and splitter options over it."""
    from ingest.pipeline import Ingestor

    ic = cfg.ingest
    if getattr(args, "chroma_url", None):
        ic.chroma_url = args.chroma_url
    for key in ("splitter", "chunk_size", "chunk_overlap"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(ic.splitter, key, value)
    for key in ("max_file_mb", "max_pages"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(ic, key, value)
    return Ingestor(ic, user=getattr(args, "user", None) or LOCAL_USER)


def read_batch(path: str) -> list[dict]:
    """The ``{"q": ...}`` objects of a ``--batch`` JSONL file, with the line of any bad one named."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise StudioError(f"cannot read {path}: {exc.strerror}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StudioError(f"{path} line {n} is not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("q"), str):
            raise StudioError(f'{path} line {n} needs a "q" string')
        items.append(item)
    return items


def job_config(config_cls, args, default_run_dir) -> tuple[object, Path]:
    """(config, run folder) for a job command: the saved config when ``--resume``, else the config
    file with its ``key=value`` overrides and ``--run-dir`` or ``default_run_dir(cfg)``."""
    from studio.config import load_config

    if args.resume:
        if not args.run_dir:
            raise StudioError("--resume needs --run-dir RUN (the run folder to continue)")
        run_dir = Path(args.run_dir)
        return load_config(config_cls, run_dir / "config.yaml"), run_dir
    cfg = load_config(config_cls, args.config, args.overrides)
    return cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg)


def run_job_command(kind: str, command: list[str], cfg, run_dir: Path, args, work) -> dict | None:
    """The shared body of `studio generate train` and `studio finetune run`.

    With ``--background`` the resolved config is written into ``run_dir`` and the same command is
    submitted as a job (its id is printed; returns None). Otherwise ``work()`` runs here as a job the
    registry shows (:meth:`studio.jobs.Jobs.run_here`), and its ``{run_dir, status, job_id, step}`` is
    returned.
    """
    from studio.config import save_config
    from studio.jobs import Jobs, job_argv

    jobs = Jobs(user=args.user)
    if args.background:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            save_config(cfg, run_dir / "config.yaml")
        job = jobs.submit(kind, job_argv(command, run_dir, args.resume), run_dir)
        out = {"run_dir": str(run_dir), "status": job.state, "job_id": job.id}
        print(json.dumps(out) if args.json else f"job {job.id} {job.state}: {run_dir}")
        return None
    return jobs.run_here(kind, job_argv(command, run_dir), run_dir, work)


def config_keys_help(parser: argparse.ArgumentParser, config_class) -> None:
    """Make ``parser``'s ``--help`` end with every key of the config class ``config_class()`` returns (its
    default and the field's help), imported only when help is asked for, so ``studio --help`` stays fast."""
    from studio.config import keys_epilog

    shown = parser.format_help

    def format_help() -> str:
        parser.epilog = keys_epilog(config_class())
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        return shown()

    parser.format_help = format_help
