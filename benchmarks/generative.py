"""Generators on digits: Lightning against the studio's previous hand-written loop, sample quality,
DDIM vs DDPM, and class-conditional accuracy with classifier-free guidance.

1. Speed: the same LightningModule (same loss, data order and noise) trained for the same steps by
   ``L.Trainer`` (``generative.train.train``: callbacks, events, checkpoint) and by a plain loop like
   the one the studio had before (zero_grad, backward, step, the EMA update, an event line every 10
   steps), alternating, twice each; steady-state steps/s from the logged step times (start-up
   excluded; it is reported apart).
2. Quality: the VAE and DCGAN train for ``--budget`` seconds, the DDPM for ``--ddpm-steps`` steps
   (a step count, not seconds: the DDIM-vs-DDPM distance ratio depends on how far the model has
   trained, and this machine's speed varies up to 4x between days, so a time budget made that
   figure a reading of the machine's load); then 360 samples are scored with the classifier-Fréchet
   distance (not Inception FID; see generative/metrics.py) beside held-out real images and a
   per-pixel Gaussian baseline. DDPM: 1000 DDPM steps against 50 DDIM steps.
3. Conditional: a class-conditional DDPM trains for ``--cond-budget`` seconds; 500 samples (50 per
   class) at guidance w = 0, 1 and 3, by DDPM 50 (stochastic) and DDIM 50 (deterministic) steps;
   class accuracy = the share the studio's digit classifier assigns to the class asked for.
   Writes benchmarks/generative_ddpm_classes.png (one row per class).

    .venv/bin/python benchmarks/generative.py [--budget 150] [--ddpm-steps 1600] [--cond-budget 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generative.callbacks import warm_ema  # noqa: E402
from generative.data import load_images  # noqa: E402
from generative.datamodule import GenData, StepBatches  # noqa: E402
from generative.generate import load_generator  # noqa: E402
from generative.images import save_grid  # noqa: E402
from generative.metrics import Judge  # noqa: E402
from generative.modules import build_module  # noqa: E402
from generative.train import GenConfig, read_events, train  # noqa: E402

HERE = Path(__file__).resolve().parent
LRS = {"vae": 1e-3, "gan": 5e-4, "ddpm": 1e-3}
GUIDANCES = (0, 1, 3)  # classifier-free guidance w
SPEED_STEPS = {"vae": 1500, "gan": 600, "ddpm": 80}


def config(model: str, **kw) -> GenConfig:
    base = dict(model=model, lr=LRS[model], batch_size=64, width=32, z_dim=16 if model == "vae" else 32,
                sample_every=10**6, checkpoint_every=10**6, log_every=10, metrics=False)
    return GenConfig(**{**base, **kw}).check()


def plain_loop(cfg: GenConfig, events: Path) -> None:
    """The previous loop's work per step, on the same module, batches and noise."""
    module, data = build_module(cfg), GenData(cfg)
    data.setup()
    opts = module.configure_optimizers()
    opts = opts if isinstance(opts, list) else [opts]
    ema = (torch.optim.swa_utils.AveragedModel(module, avg_fn=warm_ema(cfg.ema), use_buffers=True)
           if cfg.model == "ddpm" else None)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    start = time.perf_counter()
    with open(events, "w") as fh:
        for step, idx in enumerate(StepBatches(len(data.train_x), cfg.batch_size, cfg.seed, cfg.steps, lambda: 0)):
            x, y = data.train_x[idx], data.train_y[idx]
            g = module.generator(step, 0)
            if cfg.model == "gan":
                out = module.loss(x, None, g)
                opts[1].zero_grad()
                out["d_loss"].backward()
                opts[1].step()
                g_loss = bce(module.disc(out["fake"]), torch.ones(len(x)))
                opts[0].zero_grad()
                g_loss.backward()
                opts[0].step()
                losses = {"loss": float(g_loss.detach() + out["d_loss"].detach())}
            else:
                out = module.loss(x, module.labels(y), g)
                opts[0].zero_grad()
                out["loss"].backward()
                opts[0].step()
                losses = {k: float(v.detach()) for k, v in out.items()}
            if ema is not None:
                ema.update_parameters(module)
            if (step + 1) % cfg.log_every == 0 or step == 0:
                fh.write(json.dumps({"step": step + 1, "seconds": time.perf_counter() - start, **losses}) + "\n")


def steady_rate(rows: list[dict]) -> float:
    """Steps per second between the first and the last logged step (start-up and the end excluded)."""
    rows = [r for r in rows if "loss" in r]
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["seconds"] - rows[0]["seconds"])


def speed(tmp: Path) -> list[tuple]:
    out = []
    for model, steps in SPEED_STEPS.items():
        cfg = config(model, steps=steps)
        plain, light, startup = [], [], []
        for r in range(2):
            plain_loop(cfg, tmp / f"plain_{model}_{r}.jsonl")
            plain.append(steady_rate([json.loads(x) for x in (tmp / f"plain_{model}_{r}.jsonl").open()]))
            t0 = time.perf_counter()
            train(cfg, tmp / f"light_{model}_{r}")
            rows = read_events(tmp / f"light_{model}_{r}")
            light.append(steady_rate(rows))
            startup.append(time.perf_counter() - t0 - rows[-1]["seconds"])
        p, q = max(plain), max(light)
        out.append((model, p, q, q / p, min(startup)))
        print(f"{model}: previous loop {p:.1f} steps/s, Lightning {q:.1f} steps/s -> {q / p:.2f}x "
              f"(runs: {[round(v, 1) for v in plain]} / {[round(v, 1) for v in light]})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=150, help="training seconds per model for the quality table")
    ap.add_argument("--ddpm-steps", type=int, default=1600,
                    help="training steps of the DDPM in the quality table (0: --budget seconds like the others)")
    ap.add_argument("--cond-budget", type=float, default=300, help="training seconds of the conditional DDPM")
    ap.add_argument("--n", type=int, default=360)
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "quality", "conditional"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    judge = Judge("digits", 16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        speeds = speed(tmp) if "speed" not in args.skip else []
        rows, sampler_line = quality(args, judge, tmp) if "quality" not in args.skip else ([], "")
        cond = conditional(args, judge, tmp) if "conditional" not in args.skip else None
    print(f"\n## {time.strftime('%Y-%m-%d')}: generators on digits (16x16), 2 CPU threads\n")
    if speeds:
        print("| model | previous loop, steps/s | Lightning, steps/s | ratio | "
              "Lightning outside the steps (start-up, final grid, save), s |")
        print("|---|---:|---:|---:|---:|")
        for model, p, q, r, s in speeds:
            print(f"| {model} | {p:.1f} | {q:.1f} | {r:.2f}x | {s:.1f} |")
    if rows:
        print(f"\n| {'samples'} | sampling | classifier-Fréchet |\n|---|---:|---:|")
        for name, secs, fd in rows:
            print(f"| {name} | {secs} | {fd:.1f} |")
        print("\n" + sampler_line)
    if cond:
        print(f"\nConditional DDPM ({cond['steps']} steps in {cond['seconds']:.0f} s), 500 samples (50 per class):")
        print("| guidance w | DDPM 50: class accuracy | classifier-Fréchet | DDIM 50: class accuracy | "
              "classifier-Fréchet |\n|---:|---:|---:|---:|---:|")
        for w in GUIDANCES:
            (a, f), (b, g) = cond["ddpm", w], cond["ddim", w]
            print(f"| {w} | {a:.3f} | {f:.1f} | {b:.3f} | {g:.1f} |")


def quality(args, judge: Judge, tmp: Path) -> tuple[list, str]:
    held, _ = load_images("digits", 16, split="test")
    train_x, _ = load_images("digits", 16)
    mu, sd = train_x.mean(0), train_x.std(0)
    noise = (mu + sd * torch.randn(args.n, *mu.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    rows = [("held-out real images (what a perfect generator reaches)", "-", judge.score(held[: args.n])["fd"]),
            ("per-pixel Gaussian baseline", "-", judge.score(noise)["fd"])]
    line = ""
    for model in ("vae", "gan", "ddpm"):
        run = tmp / f"q_{model}"
        by_steps = model == "ddpm" and args.ddpm_steps > 0
        status = train(config(model, steps=args.ddpm_steps if by_steps else 10**6,
                              budget_seconds=0 if by_steps else args.budget), run)
        gen = load_generator(run)
        t0 = time.perf_counter()
        samples = gen.sample(args.n, seed=1, steps=50, sampler="ddim") if model == "ddpm" else gen.sample(args.n, 1)
        t_fast = time.perf_counter() - t0
        fd = judge.score(samples)["fd"]
        save_grid(samples[:64], HERE / f"generative_{model}.png", model, status["step"])
        rows.append((f"{model} ({status['step']} steps in {status['train_seconds']:.0f} s)"
                     + (", DDIM 50 steps" if model == "ddpm" else ""), f"{t_fast:.1f} s", fd))
        print(f"{rows[-1][0]}: classifier-Fréchet {fd:.1f}", flush=True)
        if model == "ddpm":
            t0 = time.perf_counter()
            full = gen.sample(args.n, seed=1, sampler="ddpm")
            t_full = time.perf_counter() - t0
            fd_full = judge.score(full)["fd"]
            rows.append(("ddpm, DDPM 1000 steps", f"{t_full:.1f} s", fd_full))
            line = (f"DDIM 50 steps against DDPM 1000 steps: {t_fast:.1f} s against {t_full:.1f} s, speedup "
                    f"{t_full / t_fast:.1f}x (goal >= 15x), distance ratio {fd / fd_full:.3f} (goal <= 1.10)")
            print(line, flush=True)
    return rows, line


def conditional(args, judge: Judge, tmp: Path) -> dict:
    run = tmp / "cond"
    status = train(config("ddpm", steps=10**6, budget_seconds=args.cond_budget, conditional=True), run)
    gen = load_generator(run)
    labels = torch.arange(10).repeat_interleave(50)
    out = {"steps": status["step"], "seconds": status["train_seconds"]}
    for sampler in ("ddpm", "ddim"):  # 50 steps each; DDIM is deterministic (eta = 0), DDPM draws fresh noise
        for w in GUIDANCES:
            images = gen.module.sample(len(labels), 1, labels, float(w), 50, sampler)
            score = judge.score(images, labels)
            out[sampler, w] = score["class_accuracy"], score["fd"]
            print(f"conditional DDPM, {sampler.upper()} 50, guidance {w}: class accuracy "
                  f"{score['class_accuracy']:.3f}, classifier-Fréchet {score['fd']:.1f}", flush=True)
    grid = gen.class_grid(per_class=10, seed=0, steps=50, sampler="ddpm", guidance=3.0)
    save_grid(grid, HERE / "generative_ddpm_classes.png", "ddpm (conditional, guidance 3, DDPM 50)", status["step"],
              nrow=10)
    return out


if __name__ == "__main__":
    main()
