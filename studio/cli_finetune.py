"""`studio finetune run`: a LoRA fine-tuning job, in the foreground or as a background job."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def default_run_dir(name: str) -> Path:
    from studio.env import unique_run_dir

    return unique_run_dir("runs", "finetune", name=name)


def cmd_run(args) -> int:
    from finetune.train import FinetuneConfig, run_finetune
    from studio.config import load_config, save_config
    from studio.jobs import Jobs

    if args.resume:
        if not args.run_dir:
            raise StudioError("--resume needs --run-dir RUN (the run folder to continue)")
        run_dir = Path(args.run_dir)
        cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    else:
        cfg = load_config(FinetuneConfig, args.config, args.overrides)
        if not cfg.data:
            raise StudioError(f"{args.config}: set data (a training file)")
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(Path(args.config).stem)
    jobs = Jobs()
    if args.background:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            save_config(cfg, run_dir / "config.yaml")
        argv = ["finetune", "run", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
        job = jobs.submit("finetune", argv + (["--resume"] if args.resume else []), run_dir)
        out = {"run_dir": str(run_dir), "status": job.state, "job_id": job.id}
        print(json.dumps(out) if args.json else f"job {job.id} {job.state}: {run_dir}")
        return 0
    job_id = os.environ.get("STUDIO_JOB_ID") or jobs.register(
        "finetune", ["finetune", "run", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)], run_dir,
        state="running", pid=os.getpid()).id

    def progress(step, total, row):
        if not args.json and ("loss" in row or "val_loss" in row):
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k in ("loss", "val_loss") and v is not None)
            print(f"step {step}/{total} {shown}", flush=True)

    try:
        status = run_finetune(cfg, run_dir, resume=args.resume, progress=progress)
    except BaseException as exc:
        jobs.finish(job_id, "failed", f"{type(exc).__name__}: {exc}")
        jobs.pump()
        raise
    jobs.finish(job_id, status["state"], status.get("error"))
    jobs.pump()
    out = {"run_dir": str(run_dir), "status": status["state"], "job_id": job_id, "step": status.get("step")}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{status['state']} at step {status.get('step')}: {run_dir}")
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            for k in m["after"]:
                print(f"  {k:<12} before {m['before'].get(k)}  after {m['after'][k]}")
    return 0 if status["state"] in ("finished", "cancelled") else 1
