"""The Generate tab: train VAE / GAN / DDPM as background jobs and watch them; then sample, walk the
VAE's latent space, and watch DDPM denoise.

Layout and wiring live in :func:`build_generate_tab`; the handlers are module-level functions over plain
``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser:
:func:`make_config` turns the widget values into a checked :class:`GenConfig`, :func:`start_job` submits
the run, :func:`show` renders a job from its run folder, and the sampling handlers draw from a finished
(or checkpointed) run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from studio.env import LOCAL_USER
from studio.errors import StudioError
from studio.paths import Roots
from studio.ui.guard import as_float, as_int, choice, fail, public
from studio.ui.jobs_ui import (
    job_choices,
    job_controls,
    job_log_panel,
    jobs,
    run_dir_of,
    submit_job,
    wire_job_controls,
)
from studio.ui.wiring import Values, on

NOTICE = ("Generated images are **synthetic**: they come from a model trained here, are not real data, "
          "and every PNG the studio writes says so in its metadata.")
# the inputs of /generate_start in the order API clients pass them positionally
START = ["model", "dataset", "size", "channels", "path", "steps", "budget", "seed", "batch", "lr", "width",
         "conditional", "patience"]
SHOWN = ["status", "plot", "grid"]
OUT = ["out1", "out2", "out_note"]
SAMPLERS = ["ddpm", "ddim"]
ALL_CLASSES = -1


@dataclass
class GenerateServices:
    """What the Generate tab's handlers work with: where an image folder (or IDX folder) may be."""

    roots: Roots


def classes() -> list[tuple[str, int]]:
    """The class picker's choices: every class, or one (digits and Fashion-MNIST share the numbers 0-9)."""
    from generative.data import CLASS_NAMES

    return [("all classes, one row each", ALL_CLASSES)] + [
        (f"{i} (digit {i} / {name})", i) for i, name in enumerate(CLASS_NAMES["fashion"])]


def datasets() -> list[str]:
    from generative.data import IMAGE_DATASETS, TOYS

    return [*IMAGE_DATASETS, *TOYS]


def loss_plot(events: list[dict], model: str, metrics: list[dict] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax3) = plt.subplots(1, 2, figsize=(9, 3))
    key = "fd" if metrics and "fd" in metrics[-1] else "mmd"  # images: Fréchet; 2-D toys: MMD
    rows = [m for m in metrics or [] if key in m]
    if rows:
        ax3.plot([m["step"] for m in rows], [m[key] for m in rows], marker="o", color="#c60")
        ax3.set_yscale("log")
    ax3.set_xlabel("step")
    ax3.set_title("classifier-Fréchet distance (lower is better; not Inception FID)" if key == "fd"
                  else "MMD between samples and fresh data (lower is better)", fontsize=8)
    train = [e for e in events if "loss" in e]  # training steps; validations carry val_loss
    if train:
        steps = [e["step"] for e in train]
        keys = ["g_loss", "d_loss"] if model == "gan" else ["loss"]
        for k in keys:
            ax.plot(steps, [e.get(k) for e in train], label=k)
        if model == "vae":
            ax2 = ax.twinx()
            ax2.plot(steps, [e.get("kl") for e in train], color="#999", lw=1, label="KL")
            ax2.set_ylabel("KL", fontsize=8)
    val = [e for e in events if "val_loss" in e]
    if val and model != "gan":  # a GAN's val_loss is its discriminator's: not a curve to read quality from
        ax.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o", color="#333", ms=4, label="val_loss")
    stop = next((e for e in events if e.get("early_stop")), None)
    if stop:
        ax.axvline(stop["step"], ls="--", color="#c00", lw=1,
                   label=f"early stop (best val {stop.get('best_val_loss', 0):.4g})")
    if train or val:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss", fontsize=9)
    fig.tight_layout()
    return fig


def latest_grid(run_dir: Path) -> str | None:
    samples = sorted((run_dir / "samples").glob("*.png"), key=lambda p: p.stat().st_mtime) \
        if (run_dir / "samples").is_dir() else []
    return str(samples[-1]) if samples else None


# --- handlers: training ----------------------------------------------------------------------------------
def metric_text(row: dict) -> str:
    """The last sample metrics for the status line: images have classifier-Fréchet, confidence and the
    nearest-neighbour ratio; 2-D toys have the MMD to fresh data."""
    if "fd" in row:
        right = f", right class {row['class_accuracy']:.0%}" if "class_accuracy" in row else ""
        return (f" · classifier-Fréchet {row['fd']:.1f}, confidence {row['confidence']:.2f}, "
                f"nearest-neighbour ratio {row['nn_ratio']:.2f}{right}")
    return f" · MMD to fresh data {row['mmd']:.4f}" if "mmd" in row else ""


def show(v: Values, *, user: str = LOCAL_USER) -> Values:
    """Render the picked job: status line (with the last sample metrics), loss curves, latest sample grid."""
    from generative.train import read_events, read_metrics, read_status

    job_id = v["job"]
    rd = run_dir_of(job_id, user)
    if rd is None:
        return {"status": "No job selected."}
    j = jobs(user).get(job_id)
    st = read_status(rd)
    err = f"\n\n**Error:** {st.get('error') or j.error}" if j.state == "failed" else ""
    metrics = read_metrics(rd)
    last = metric_text(metrics[-1]) if metrics else ""
    status = (f"**{j.state}** · {st.get('model', '?')} on {st.get('dataset', '?')} · step {st.get('step', 0)}/"
              f"{st.get('steps', '?')} · {st.get('train_seconds', 0)} s{last} · run folder `{public(str(rd))}`{err}")
    return {"status": status, "plot": loss_plot(read_events(rd), st.get("model", ""), metrics),
            "grid": latest_grid(rd)}


def make_config(v: Values, roots: Roots):
    """The checked :class:`GenConfig` the widgets ask for: a known dataset, an image folder inside
    ``roots``, every number a number within the core's limits (steps, width, batch, image size)."""
    from generative.train import DataConfig, GenConfig

    d = choice(v["dataset"], datasets(), "dataset")
    steps = as_int(v["steps"], "steps")
    try:
        folder = str(roots.resolve(v["path"], "image folder")) if (v["path"] or "").strip() else None
        data = DataConfig(name=d, size=as_int(v["size"], "image size"), channels=as_int(v["channels"], "colour"),
                          path=folder)
        return GenConfig(model=v["model"], data=data, steps=steps,
                         budget_seconds=as_float(v["budget"], "time budget", 0.0), seed=as_int(v["seed"], "seed", 0),
                         batch_size=as_int(v["batch"], "batch size"), lr=as_float(v["lr"], "learning rate"),
                         width=as_int(v["width"], "width"), sample_every=max(10, min(200, steps // 20)),
                         checkpoint_every=max(10, min(200, steps // 20)),
                         conditional=choice(v.get("conditional", False), [True, False], "class-conditional"),
                         early_stop_patience=as_int(v.get("patience", 0), "early-stop patience", 0)).check()
    except StudioError as exc:
        raise fail(exc) from None


def start_job(v: Values, *, services: GenerateServices, user: str = LOCAL_USER,
              session: str = "") -> Values:
    """Check the config and (for an image dataset) that its images load, write the run folder and submit
    the job; the picker shows it."""
    from generative.data import IMAGE_DATASETS, load_images

    cfg = make_config(v, services.roots)
    try:
        if cfg.data.name in IMAGE_DATASETS:  # a bad dataset fails here, not in the job
            load_images(cfg.data.name, cfg.data.size, cfg.data.channels, cfg.data.path, limit=2)
    except StudioError as exc:
        raise fail(exc) from None
    return submit_job(cfg, "generate", "generative", f"{v['model']}_{cfg.data.name}", ["generate", "train"],
                      user, session)


def refresh(_v: Values, *, user: str = LOCAL_USER) -> Values:
    return {"job": gr.update(choices=job_choices("generate", user))}


def default_lr(v: Values) -> Values:
    """The model's usual learning rate (GAN 2e-4, else 1e-3)."""
    return {"lr": 2e-4 if v["model"] == "gan" else 1e-3}


# --- handlers: sampling from a run ------------------------------------------------------------------------
def loaded(job_id, user: str):
    """(generator, run folder) of the picked job (one of ``user``'s)."""
    from generative.generate import load_generator

    rd = run_dir_of(job_id, user)
    if rd is None:
        raise gr.Error("Pick a job first.")
    try:
        return load_generator(rd), rd
    except StudioError as exc:
        raise fail(exc) from None


def draw_samples(v: Values, *, user: str = LOCAL_USER) -> Values:
    """A grid of ``n`` samples (DDPM: with the chosen sampler and steps)."""
    from generative.images import save_grid

    gen, rd = loaded(v["job"], user)
    n, sd, stp = as_int(v["n"], "samples"), as_int(v["s_seed"], "seed", 0), as_int(v["s_steps"], "DDPM steps")
    smp = choice(v["sampler"], SAMPLERS, "sampler")
    label = choice(v.get("label", ALL_CLASSES), [c for _, c in classes()], "class")
    guidance = as_float(v.get("guidance", 0.0), "guidance", 0.0) if gen.classes and gen.kind == "ddpm" else 0.0
    stp = stp if gen.kind == "ddpm" else None
    nrow, what = None, ""
    try:
        if gen.classes and label == ALL_CLASSES:  # one row per class
            nrow = max(1, n // len(gen.classes))
            imgs = gen.class_grid(nrow, sd, stp, smp, guidance)
            what = f", one row per class ({nrow} each)"
        else:
            imgs = gen.sample(n, sd, stp, smp, label=None if label == ALL_CLASSES else label, guidance=guidance)
            what = f", class {label} ({gen.classes[label]})" if label != ALL_CLASSES else ""
    except StudioError as exc:
        raise fail(exc) from None
    if gen.classes and gen.kind == "ddpm":
        what += f", guidance {guidance:g}"
    out = save_grid(imgs, rd / "outputs" / f"samples_seed{sd}.png", gen.kind, nrow=nrow)
    return {"out1": str(out), "out2": gr.skip(),
            "out_note": f"{len(imgs)} samples, seed {sd}{what}" + (f", {smp} at {stp} steps" if stp else "")}


def walk_latent(v: Values, *, user: str = LOCAL_USER) -> Values:
    """VAE: decode along a line between two codes, and a z1 x z2 map of the latent space."""
    from generative.data import load_images
    from generative.images import save_grid

    gen, rd = loaded(v["job"], user)
    if gen.toy:
        from generative.data import load_toy
        from generative.images import save_scatter

        pts = load_toy(gen.cfg.data.name, 2, seed=5)
        a = save_scatter(gen.interpolate(pts[0], pts[1], n=50), rd / "outputs" / "interpolation.png", "vae")
        b = save_scatter(gen.latent_map(30), rd / "outputs" / "latent_map.png", "vae",
                         real=load_toy(gen.cfg.data.name, 1000, seed=6))
        return {"out1": str(a), "out2": str(b),
                "out_note": "Left: decoded along a line between two points' codes. Right: a z1 x z2 grid."}
    d = gen.cfg.data
    x, _ = load_images(d.name, d.size, d.channels, d.path, split="test" if d.name == "digits" else "train", limit=2)
    a = save_grid(gen.interpolate(x[0], x[-1], n=10), rd / "outputs" / "interpolation.png", "vae", nrow=10)
    b = save_grid(gen.latent_map(10), rd / "outputs" / "latent_map.png", "vae", nrow=10)
    return {"out1": str(a), "out2": str(b),
            "out_note": "Left: decoding along the line between two real images' codes. Right: z1 x z2 grid."}


def denoise_trajectory(v: Values, *, user: str = LOCAL_USER) -> Values:
    """DDPM: x_t from pure noise to the sample (a strip and a GIF; for a 2-D toy, the first and last frame)."""
    from generative.images import save_gif, save_grid

    gen, rd = loaded(v["job"], user)
    smp = choice(v["sampler"], SAMPLERS, "sampler")
    stp = as_int(v["s_steps"], "DDPM steps")
    if gen.kind == "ddpm":
        try:
            gen.check_request(8, stp)
        except StudioError as exc:
            raise fail(exc) from None
    if gen.toy:
        from generative.images import save_scatter

        frames = gen.trajectory(1000, 0, int(stp), smp, frames=6)
        paths = [save_scatter(f, rd / "outputs" / f"trajectory_{i}.png", "ddpm") for i, f in enumerate(frames)]
        return {"out1": str(paths[0]), "out2": str(paths[-1]),
                "out_note": f"left: early x_t; right: the samples ({smp}, {int(stp)} steps)"}
    frames = gen.trajectory(8, 0, int(stp), smp, frames=10)
    import torch

    strip = save_grid(torch.cat([f[:1] for f in frames]), rd / "outputs" / "trajectory.png",
                      "ddpm", nrow=len(frames))
    gif = save_gif(frames, rd / "outputs" / "trajectory.gif")
    return {"out1": str(strip), "out2": str(gif),
            "out_note": f"x_t from pure noise to the sample ({smp}, {int(stp)} steps)"}


def compare_samplers(v: Values, *, user: str = LOCAL_USER) -> Values:
    """DDPM on images: all T steps against DDIM at the chosen steps, same seed, timed (and scored)."""
    import time

    from generative.images import save_grid

    gen, rd = loaded(v["job"], user)
    if gen.kind != "ddpm" or gen.toy:
        raise gr.Error("The comparison is for DDPM runs on images.")
    n, stp = min(as_int(v["n"], "samples"), 64), as_int(v["s_steps"], "DDPM steps")
    try:
        gen.check_request(n, stp)
    except StudioError as exc:
        raise fail(exc) from None
    t0 = time.perf_counter()
    full = gen.sample(n, 0, None, "ddpm")
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = gen.sample(n, 0, int(stp), "ddim")
    t_fast = time.perf_counter() - t0
    a = save_grid(full, rd / "outputs" / "ddpm_full.png", "ddpm")
    b = save_grid(fast, rd / "outputs" / f"ddim_{int(stp)}.png", "ddpm")
    note = (f"Left: DDPM, {gen.scheduler.config.num_train_timesteps} steps, {t_full:.1f} s. Right: DDIM, "
            f"{int(stp)} steps, {t_fast:.1f} s ({t_full / t_fast:.0f}x faster), same seed.")
    if gen.cfg.data.name in ("digits", "fashion"):
        from generative.train import judge_for

        j = judge_for(gen.cfg.data)
        note += f" Classifier-Fréchet: DDPM {j.score(full)['fd']:.1f}, DDIM {j.score(fast)['fd']:.1f}."
    return {"out1": str(a), "out2": str(b), "out_note": note}


# --- layout ---------------------------------------------------------------------------------------------
def _training(ui: dict) -> None:
    ui["model"] = gr.Radio(["vae", "gan", "ddpm"], value="vae", label="Model", elem_id="gen-model")
    with gr.Row():
        ui["dataset"] = gr.Dropdown(datasets(), value="digits", label="Dataset (gmm, moons, rings: 2-D toys)",
                                    elem_id="gen-data")
        ui["size"] = gr.Dropdown([8, 12, 16, 20, 24, 28, 32], value=16, label="Image size")
        ui["channels"] = gr.Radio([("grayscale", 1), ("RGB", 3)], value=1, label="Colour")
    ui["path"] = gr.Textbox("", label="Folder of images (folder dataset) or IDX folder (fashion)",
                            placeholder="/path/to/images")
    with gr.Row():
        ui["steps"] = gr.Number(2000, precision=0, label="Steps", elem_id="gen-steps")
        ui["budget"] = gr.Number(0, label="Time budget, s (0 = none)", elem_id="gen-budget")
        ui["seed"] = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        ui["batch"] = gr.Number(64, precision=0, label="Batch size")
        ui["lr"] = gr.Number(0.001, label="Learning rate (GAN: 2e-4)", elem_id="gen-lr")
        ui["width"] = gr.Number(32, precision=0, label="Width", elem_id="gen-width")
    with gr.Row():
        ui["conditional"] = gr.Checkbox(False, label="Class-conditional (VAE or DDPM on digits / fashion)",
                                        elem_id="gen-cond")
        ui["patience"] = gr.Number(0, precision=0, label="Early stop after N checks without a better "
                                   "validation loss (0 = off)", elem_id="gen-patience")
    ui["start"] = gr.Button("Start training", variant="primary", elem_id="gen-start")


def _watch(ui: dict) -> None:
    ui["status"] = gr.Markdown("No job selected.", elem_id="gen-status")
    ui["plot"] = gr.Plot(label="Loss", elem_id="gen-plot")
    ui["grid"] = gr.Image(label="Latest samples (synthetic)", type="filepath", elem_id="gen-grid", height=300)


def _sampling(ui: dict) -> None:
    with gr.Accordion("Sample from the selected run", open=False):
        with gr.Row():
            ui["n"] = gr.Number(64, precision=0, label="Samples")
            ui["s_seed"] = gr.Number(0, precision=0, label="Seed")
            ui["sampler"] = gr.Radio(SAMPLERS, value="ddim", label="DDPM sampler")
            ui["s_steps"] = gr.Number(50, precision=0, label="DDPM steps")
        with gr.Row():
            ui["label"] = gr.Dropdown(classes(), value=ALL_CLASSES, label="Class (class-conditional runs)",
                                      elem_id="gen-label")
            ui["guidance"] = gr.Slider(0, 10, value=1, step=0.5, elem_id="gen-guidance",
                                       label="Guidance w (conditional DDPM: 0 = none; higher = more like the class)",
                                       info="guided: use the DDPM sampler (50 steps); DDIM drifts under guidance")
        with gr.Row():
            ui["draw"] = gr.Button("Draw samples", elem_id="gen-draw")
            ui["walk"] = gr.Button("VAE: interpolate + latent map")
            ui["denoise"] = gr.Button("DDPM: denoising trajectory")
            ui["versus"] = gr.Button("DDPM (all T steps) vs DDIM (the steps above)", elem_id="gen-versus")
        with gr.Row():
            ui["out1"] = gr.Image(label="Samples / interpolation", type="filepath", elem_id="gen-out1")
            ui["out2"] = gr.Image(label="Latent map / trajectory (GIF)", type="filepath", elem_id="gen-out2")
        ui["out_note"] = gr.Markdown("")


def _wire(ui: dict, s: GenerateServices) -> None:
    # api names of events that had none kept as Gradio gave them (do_versus, lambda_2, ...) for API clients
    wire_job_controls(ui, "generate", show, SHOWN)
    on(ui["versus"].click, compare_samplers, ui, ["job", "n", "s_steps"], OUT, api_name="do_versus")
    started = on(ui["start"].click, partial(start_job, services=s), ui, START, ["job"], api_name="generate_start")
    on(started.then, show, ui, ["job"], SHOWN, api_name="generate_show")
    on(ui["refresh"].click, refresh, ui, [], ["job"], api_name="lambda_2")
    on(ui["draw"].click, draw_samples, ui, ["job", "n", "s_seed", "sampler", "s_steps", "label", "guidance"], OUT,
       api_name="generate_sample")
    on(ui["walk"].click, walk_latent, ui, ["job"], OUT, api_name="do_walk")
    on(ui["denoise"].click, denoise_trajectory, ui, ["job", "sampler", "s_steps"], OUT, api_name="do_denoise")
    on(ui["model"].change, default_lr, ui, ["model"], ["lr"], api_name="lambda_3")


def build_generate_tab(roots: Roots) -> None:
    """``roots``: where the image folder (or IDX folder) typed in the tab may be."""
    ui: dict = {}
    gr.Markdown(NOTICE, elem_id="gen-notice")
    with gr.Row():
        with gr.Column(scale=2):
            _training(ui)
            job_controls(ui, "generate", "gen", "Refresh list")
            job_log_panel(ui, "gen")
        with gr.Column(scale=3):
            _watch(ui)
    _sampling(ui)
    ui["timer"] = gr.Timer(2.0)
    _wire(ui, GenerateServices(roots))
