"""`studio finetune run`: a LoRA fine-tuning job, in the foreground or as a background job."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

from finetune.adapters import GGUF_QUANTS
from studio.cli_common import config_keys_help, job_config, run_job_command
from studio.errors import StudioError


def add_parsers(sub) -> None:
    f = sub.add_parser("finetune", help="LoRA fine-tuning: run a job")
    fsub = f.add_subparsers(dest="finetune_command", metavar="ACTION", required=True)
    run = fsub.add_parser("run", help="fine-tune with LoRA (foreground, or --background as a job)")
    run.add_argument("config", metavar="CONFIG.yaml", help="e.g. configs/finetune/capital_records.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. epochs=1 r=16 lr=0.0005")
    run.add_argument("--run-dir", help="run folder (default: $STUDIO_HOME/runs/finetune/NAME-TIME)")
    run.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    run.add_argument("--background", action="store_true", help="submit as a job and return at once")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=cmd_run)
    config_keys_help(run, lambda: import_module("finetune.config").FinetuneConfig)

    ls = fsub.add_parser("adapters", help="finished runs with an adapter (usable in chat with --adapter)")
    ls.add_argument("--task", choices=["generation", "classification"])
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_adapters)
    mg = fsub.add_parser("merge", help="fold a run's LoRA adapter into a full model: RUN/merged (hf) or "
                         "RUN/merged-QUANT.gguf (llama.cpp)")
    mg.add_argument("run_dir", metavar="RUN")
    mg.add_argument("--format", choices=["hf", "gguf"], default="hf",
                    help="hf: a transformers folder; gguf: one llama.cpp file (default: hf)")
    mg.add_argument("--quant", choices=list(GGUF_QUANTS), default="f16",
                    help="the merged GGUF's weights: f16, or quantized by llama.cpp (default: f16)")
    mg.set_defaults(handler=cmd_merge)
    ex = fsub.add_parser("export", help="a run's adapter as a zip (with its config and metrics) or as a GGUF "
                         "LoRA adapter that llama.cpp applies (RUN/adapter.gguf)")
    ex.add_argument("run_dir", metavar="RUN")
    ex.add_argument("--format", choices=["zip", "gguf"], default="zip", help="default: zip")
    ex.add_argument("--out", metavar="FILE.zip", help="where the zip goes (zip only)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(handler=cmd_export)




def cmd_run(args) -> int:
    from finetune.config import FinetuneConfig
    from finetune.distributed import run_job
    from studio.paths import new_run_dir

    cfg, run_dir = job_config(FinetuneConfig, args, lambda cfg: new_run_dir("finetune", Path(args.config).stem))
    if not cfg.data:
        raise StudioError(f"{args.config}: set data (a training file)")

    def progress(step, total, row):
        if not args.json and ("loss" in row or "val_loss" in row):
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k in ("loss", "val_loss") and v is not None)
            print(f"step {step}/{total} {shown}", flush=True)

    out = run_job_command("finetune", ["finetune", "run"], cfg, run_dir, args,
                     lambda: run_job(cfg, run_dir, resume=args.resume, progress=progress))
    if out is None:
        return 0
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['status']} at step {out['step']}: {run_dir}")
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            for k in m["after"]:
                print(f"  {k:<12} before {m['before'].get(k)}  after {m['after'][k]}")
    return 0 if out["status"] in ("finished", "cancelled") else 1


def cmd_adapters(args) -> int:
    from finetune.adapters import list_adapters

    found = list_adapters(args.task, args.user)
    if args.json:
        print(json.dumps([{"name": a.name, "path": str(a.path), "task": a.task, "base_model": a.base_model,
                           "metrics": a.metrics} for a in found]))
    elif not found:
        print("no finished adapters yet; `studio finetune run configs/finetune/capital_records.yaml` makes one")
    for a in [] if args.json else found:
        print(f"{a.label()}\n    {a.path}")
    return 0


def cmd_merge(args) -> int:
    if args.format == "gguf":
        from finetune.gguf_export import merge_gguf

        out = merge_gguf(args.run_dir, args.quant)
        print(f"merged GGUF -> {out} ({out.stat().st_size / 1e6:.1f} MB); `studio models import {out}` "
              "installs it as a chat model")
        return 0
    if args.quant != "f16":
        raise StudioError("--quant applies to --format gguf; the hf merge keeps the base model's weights' type")
    from finetune.adapters import merge

    print(f"merged model -> {merge(args.run_dir)}")
    return 0


def cmd_export(args) -> int:
    if args.format == "gguf":
        from finetune.gguf_export import export_gguf, lora_summary

        if args.out:
            raise StudioError("--out is for the zip; --format gguf always writes RUN/adapter.gguf, where "
                              "`--adapter RUN` finds it")

        out = export_gguf(args.run_dir)
        if args.json:
            print(json.dumps({"path": str(out), **lora_summary(out)}))
        else:
            print(f"GGUF LoRA adapter -> {out} ({out.stat().st_size / 1e6:.1f} MB); `studio chat --adapter "
                  f"{args.run_dir}` now runs it on llama.cpp")
        return 0
    if not args.out:
        raise StudioError("say where the zip goes: --out FILE.zip (or --format gguf for llama.cpp)")
    from finetune.adapters import export

    out = export(args.run_dir, args.out)
    if args.json:
        print(json.dumps({"path": str(out), "bytes": out.stat().st_size}))
    else:
        print(f"adapter exported -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
