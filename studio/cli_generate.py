"""`studio generate` (train, sample) and `studio jobs` (list, show, tail, cancel, resume)."""

from __future__ import annotations

import json
import os
import time
from importlib import import_module
from pathlib import Path

from studio.cli_common import config_keys_help, job_config, run_job_command
from studio.errors import StudioError


def add_parsers(sub) -> None:
    g = sub.add_parser("generate", help="train VAE / GAN / DDPM generators; draw samples")
    gsub = g.add_subparsers(dest="generate_command", metavar="ACTION", required=True)
    t = gsub.add_parser("train", help="train a generator (foreground, or --background as a job)")
    t.add_argument("config", metavar="CONFIG.yaml", help="e.g. configs/generative/vae_digits.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. steps=500 seed=1 data.size=32")
    t.add_argument("--run-dir", help="run folder (default: $STUDIO_HOME/runs/generative/MODEL_DATA-TIME)")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    t.add_argument("--background", action="store_true", help="submit as a job and return at once")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=cmd_train)
    config_keys_help(t, lambda: import_module("generative.train").GenConfig)

    s = gsub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True, metavar="FILE.png")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int, help="DDPM: denoising steps (default: all T for ddpm, 50 for ddim)")
    s.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm", help="DDPM runs only")
    s.add_argument("--trajectory", metavar="FILE.gif", help="DDPM: also write the denoising as a GIF")
    s.add_argument("--label", type=int, help="a class-conditional run: the class to draw (digits: the digit; "
                   "fashion: 0 T-shirt/top ... 9 Ankle boot); without it, a grid with one row per class")
    s.add_argument("--guidance", type=float, default=0.0,
                   help="a class-conditional DDPM: classifier-free guidance w (0 = none; 1 did best here)")
    s.set_defaults(handler=cmd_sample)

    j = sub.add_parser("jobs", help="background jobs: list, show, tail, cancel, resume")
    jsub = j.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    ls = jsub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_jobs_list)
    for name, fn, helptext in (("show", cmd_jobs_show, "a job and its run status"),
                               ("tail", cmd_jobs_tail, "its latest events"),
                               ("cancel", cmd_jobs_cancel, "stop it (it checkpoints first)"),
                               ("resume", cmd_jobs_resume, "continue a cancelled or failed job")):
        p = jsub.add_parser(name, help=helptext)
        p.add_argument("id")
        p.add_argument("--json", action="store_true")
        if name == "tail":
            p.add_argument("-n", type=int, default=10)
            p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
        p.set_defaults(handler=fn)




def cmd_train(args) -> int:
    from generative.train import RUN_DIR_ENV, GenConfig, is_worker, train
    from studio.config import load_config
    from studio.paths import new_run_dir

    if is_worker():  # a DDP process Lightning started (devices > 1): it trains; rank 0 registers and reports
        run_dir = Path(os.environ.get(RUN_DIR_ENV) or args.run_dir)
        train(None if args.resume else load_config(GenConfig, args.config, args.overrides), run_dir, args.resume)
        return 0

    cfg, run_dir = job_config(GenConfig, args, lambda cfg: new_run_dir("generative",
                                                                      f"{cfg.check().model}_{cfg.data.name}"))
    if not args.resume:
        cfg.check()

    def progress(step, total, losses):
        if not args.json:
            shown = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
            print(f"step {step}/{total} {shown}", flush=True)

    out = run_job_command("generate", ["generate", "train"], cfg, run_dir, args,
                     lambda: train(cfg, run_dir, resume=args.resume, progress=progress))
    if out is None:
        return 0
    print(json.dumps(out) if args.json else f"{out['status']} at step {out['step']}: {run_dir}")
    return 0 if out["status"] in ("finished", "cancelled") else 1


def cmd_sample(args) -> int:
    from generative.generate import load_generator
    from generative.images import save_gif, save_grid

    gen = load_generator(args.run_dir)
    if args.n < 1:
        raise StudioError("--n must be at least 1")
    steps = args.steps or (50 if args.sampler == "ddim" else None)
    t0 = time.perf_counter()
    nrow = None
    if gen.classes and args.label is None:  # one row per class
        per = max(1, args.n // len(gen.classes))
        images, nrow = gen.class_grid(per, args.seed, steps, args.sampler, args.guidance), per
    else:
        images = gen.sample(args.n, args.seed, steps, args.sampler, label=args.label, guidance=args.guidance)
    path = save_grid(images, Path(args.out), gen.kind, nrow=nrow)
    what = f"{len(images)} samples from {gen.kind}"
    if gen.classes:
        what += (f" of class {args.label} ({gen.classes[args.label]})" if args.label is not None
                 else f", {nrow} per class, one row per class") + f", guidance {args.guidance:g}"
    if gen.kind == "ddpm":
        what += f" ({args.sampler}, {steps or gen.scheduler.config.num_train_timesteps} steps)"
    print(f"{what} in {time.perf_counter() - t0:.1f} s -> {path}")
    if args.trajectory:
        frames = gen.trajectory(min(args.n, 16), args.seed, steps, args.sampler, frames=12,
                                label=args.label if gen.classes else None, guidance=args.guidance)
        print(f"denoising trajectory -> {save_gif(frames, Path(args.trajectory))}")
    return 0


def _fmt(job) -> str:
    from generative.train import read_status

    st = read_status(Path(job.run_dir))
    step = f"step {st.get('step', 0)}/{st.get('steps', '?')}" if st else ""
    return f"{job.id}  {job.state:<9} {job.kind:<9} {step:<16} {job.run_dir}"


def cmd_jobs_list(args) -> int:
    from studio.jobs import Jobs

    jobs = Jobs(user=args.user).list()
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs]))
    else:
        for j in jobs:
            print(_fmt(j))
        if not jobs:
            print("no jobs yet; `studio generate train CONFIG --background` starts one")
    return 0


def cmd_jobs_show(args) -> int:
    from generative.train import read_status
    from studio.jobs import Jobs

    jobs = Jobs(user=args.user)
    jobs.refresh()
    job = jobs.get(args.id)
    out = {**job.to_dict(), "status": read_status(Path(job.run_dir))}
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


def cmd_jobs_tail(args) -> int:
    from studio.jobs import FINAL, Jobs

    jobs = Jobs(user=args.user)
    shown = 0
    while True:
        jobs.refresh()
        lines = jobs.tail(args.id, 10**9)
        start = max(shown, len(lines) - args.n) if not shown else shown
        for line in lines[start:]:
            print(line, flush=True)
        shown = len(lines)
        if not args.follow or jobs.get(args.id).state in FINAL:
            return 0
        time.sleep(1)


def cmd_jobs_cancel(args) -> int:
    from studio.jobs import Jobs

    job = Jobs(user=args.user).cancel(args.id)
    print(json.dumps(job.to_dict()) if args.json else f"job {job.id}: cancel requested ({job.state})")
    return 0


def cmd_jobs_resume(args) -> int:
    from studio.jobs import Jobs

    job = Jobs(user=args.user).resume(args.id)
    print(json.dumps(job.to_dict()) if args.json else f"job {job.id} {job.state}: {job.run_dir}")
    return 0
