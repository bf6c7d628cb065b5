"""The Generate tab: train VAE / GAN / DDPM as background jobs and watch them; then sample, walk the
VAE's latent space, and watch DDPM denoise."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.errors import StudioError
from studio.jobs import job_argv
from studio.paths import Roots, new_run_dir
from studio.ui.guard import as_float, as_int, choice, fail, public
from studio.ui.jobs_ui import job_choices, job_controls, jobs, run_dir_of

NOTICE = ("Generated images are **synthetic**: they come from a model trained here, are not real data, "
          "and every PNG the studio writes says so in its metadata.")


def loss_plot(events: list[dict], model: str, metrics: list[dict] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax3) = plt.subplots(1, 2, figsize=(9, 3))
    if metrics:
        ax3.plot([m["step"] for m in metrics], [m["fd"] for m in metrics], marker="o", color="#c60")
        ax3.set_yscale("log")
    ax3.set_xlabel("step")
    ax3.set_title("classifier-Fréchet distance (lower is better; not Inception FID)", fontsize=8)
    if events:
        steps = [e["step"] for e in events]
        keys = ["g_loss", "d_loss"] if model == "gan" else ["loss"]
        for k in keys:
            ax.plot(steps, [e.get(k) for e in events], label=k)
        if model == "vae":
            ax2 = ax.twinx()
            ax2.plot(steps, [e.get("kl") for e in events], color="#999", lw=1, label="KL")
            ax2.set_ylabel("KL", fontsize=8)
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


def build_generate_tab(roots: Roots) -> None:
    """``roots``: where the image folder (or IDX folder) typed in the tab may be."""
    from generative.data import IMAGE_DATASETS, TOYS

    gr.Markdown(NOTICE, elem_id="gen-notice")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Radio(["vae", "gan", "ddpm"], value="vae", label="Model", elem_id="gen-model")
            with gr.Row():
                dataset = gr.Dropdown([*IMAGE_DATASETS, *TOYS], value="digits",
                                      label="Dataset (gmm, moons, rings: 2-D toys)", elem_id="gen-data")
                size = gr.Dropdown([8, 12, 16, 20, 24, 28, 32], value=16, label="Image size")
                channels = gr.Radio([("grayscale", 1), ("RGB", 3)], value=1, label="Colour")
            path = gr.Textbox("", label="Folder of images (folder dataset) or IDX folder (fashion)",
                              placeholder="/path/to/images")
            with gr.Row():
                steps = gr.Number(2000, precision=0, label="Steps", elem_id="gen-steps")
                budget = gr.Number(0, label="Time budget, s (0 = none)", elem_id="gen-budget")
                seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                batch = gr.Number(64, precision=0, label="Batch size")
                lr = gr.Number(0.001, label="Learning rate (GAN: 2e-4)", elem_id="gen-lr")
                width = gr.Number(32, precision=0, label="Width", elem_id="gen-width")
            start = gr.Button("Start training", variant="primary", elem_id="gen-start")
            job, refresh = job_controls("generate", "gen", "Refresh list")
        with gr.Column(scale=3):
            status = gr.Markdown("No job selected.", elem_id="gen-status")
            plot = gr.Plot(label="Loss", elem_id="gen-plot")
            grid = gr.Image(label="Latest samples (synthetic)", type="filepath", elem_id="gen-grid", height=300)
    with gr.Accordion("Sample from the selected run", open=False):
        with gr.Row():
            n = gr.Number(64, precision=0, label="Samples")
            s_seed = gr.Number(0, precision=0, label="Seed")
            sampler = gr.Radio(["ddpm", "ddim"], value="ddim", label="DDPM sampler")
            s_steps = gr.Number(50, precision=0, label="DDPM steps")
        with gr.Row():
            draw = gr.Button("Draw samples", elem_id="gen-draw")
            walk = gr.Button("VAE: interpolate + latent map")
            denoise = gr.Button("DDPM: denoising trajectory")
            versus = gr.Button("DDPM (all T steps) vs DDIM (the steps above)", elem_id="gen-versus")
        with gr.Row():
            out1 = gr.Image(label="Samples / interpolation", type="filepath", elem_id="gen-out1")
            out2 = gr.Image(label="Latent map / trajectory (GIF)", type="filepath", elem_id="gen-out2")
        out_note = gr.Markdown("")
    timer = gr.Timer(2.0)

    def show(job_id):
        from generative.train import read_events, read_metrics, read_status

        rd = run_dir_of(job_id)
        if rd is None:
            return "No job selected.", gr.skip(), gr.skip()
        j = jobs().get(job_id)
        st = read_status(rd)
        err = f"\n\n**Error:** {st.get('error') or j.error}" if j.state == "failed" else ""
        metrics = read_metrics(rd)
        last = (f" · classifier-Fréchet {metrics[-1]['fd']:.1f}, confidence {metrics[-1]['confidence']:.2f}, "
                f"nearest-neighbour ratio {metrics[-1]['nn_ratio']:.2f}" if metrics else "")
        text = (f"**{j.state}** · {st.get('model', '?')} on {st.get('dataset', '?')} · step {st.get('step', 0)}/"
                f"{st.get('steps', '?')} · {st.get('train_seconds', 0)} s{last} · run folder `{public(str(rd))}`{err}")
        return text, loss_plot(read_events(rd), st.get("model", ""), metrics), latest_grid(rd)

    def do_start(m, d, sz, ch, p, st, bud, sd, bs, lr_v, w):
        from generative.data import load_images
        from generative.train import DataConfig, GenConfig
        from studio.config import save_config

        choice(d, [*IMAGE_DATASETS, *TOYS], "dataset")
        steps_v = as_int(st, "steps")
        try:
            folder = str(roots.resolve(p, "image folder")) if (p or "").strip() else None
            data = DataConfig(name=d, size=as_int(sz, "image size"), channels=as_int(ch, "colour"), path=folder)
            cfg = GenConfig(model=m, data=data, steps=steps_v, budget_seconds=as_float(bud, "time budget", 0.0),
                            seed=as_int(sd, "seed", 0),
                            batch_size=as_int(bs, "batch size"), lr=as_float(lr_v, "learning rate"),
                            width=as_int(w, "width"), sample_every=max(10, min(200, steps_v // 20)),
                            checkpoint_every=max(10, min(200, steps_v // 20))).check()
            if d in IMAGE_DATASETS:  # a bad dataset fails here, not in the job
                load_images(d, cfg.data.size, cfg.data.channels, folder, limit=2)
        except StudioError as exc:
            raise fail(exc) from None
        rd = new_run_dir("generative", f"{m}_{d}")
        rd.mkdir(parents=True)
        save_config(cfg, rd / "config.yaml")
        j = jobs().submit("generate", job_argv(["generate", "train"], rd), rd)
        return gr.update(choices=job_choices("generate"), value=j.id)

    def loaded(job_id):
        from generative.generate import load_generator

        rd = run_dir_of(job_id)
        if rd is None:
            raise gr.Error("Pick a job first.")
        try:
            return load_generator(rd), rd
        except StudioError as exc:
            raise fail(exc) from None

    def do_draw(job_id, n_v, sd, smp, stp):
        from generative.images import save_grid

        gen, rd = loaded(job_id)
        n_v, sd, stp = as_int(n_v, "samples"), as_int(sd, "seed", 0), as_int(stp, "DDPM steps")
        choice(smp, ["ddpm", "ddim"], "sampler")
        try:
            imgs = gen.sample(n_v, sd, stp if gen.kind == "ddpm" else None, smp)
        except StudioError as exc:
            raise fail(exc) from None
        return str(save_grid(imgs, rd / "outputs" / f"samples_seed{sd}.png", gen.kind)), gr.skip(), \
            f"{n_v} samples, seed {sd}" + (f", {smp} at {stp} steps" if gen.kind == "ddpm" else "")

    def do_walk(job_id):
        from generative.data import load_images
        from generative.images import save_grid

        gen, rd = loaded(job_id)
        if gen.toy:
            from generative.data import load_toy
            from generative.images import save_scatter

            pts = load_toy(gen.cfg.data.name, 2, seed=5)
            a = save_scatter(gen.interpolate(pts[0], pts[1], n=50), rd / "outputs" / "interpolation.png", "vae")
            b = save_scatter(gen.latent_map(30), rd / "outputs" / "latent_map.png", "vae",
                             real=load_toy(gen.cfg.data.name, 1000, seed=6))
            return str(a), str(b), "Left: decoded along a line between two points' codes. Right: a z1 x z2 grid."
        x, _ = load_images(gen.cfg.data.name, gen.cfg.data.size, gen.cfg.data.channels, gen.cfg.data.path,
                           split="test" if gen.cfg.data.name == "digits" else "train", limit=2)
        a = save_grid(gen.interpolate(x[0], x[-1], n=10), rd / "outputs" / "interpolation.png", "vae", nrow=10)
        b = save_grid(gen.latent_map(10), rd / "outputs" / "latent_map.png", "vae", nrow=10)
        return str(a), str(b), "Left: decoding along the line between two real images' codes. Right: z1 x z2 grid."

    def do_denoise(job_id, smp, stp):
        from generative.images import save_gif, save_grid

        gen, rd = loaded(job_id)
        choice(smp, ["ddpm", "ddim"], "sampler")
        stp = as_int(stp, "DDPM steps")
        if gen.kind == "ddpm":
            try:
                gen.check_request(8, stp)
            except StudioError as exc:
                raise fail(exc) from None
        if gen.toy:
            from generative.images import save_scatter

            frames = gen.trajectory(1000, 0, int(stp), smp, frames=6)
            paths = [save_scatter(f, rd / "outputs" / f"trajectory_{i}.png", "ddpm") for i, f in enumerate(frames)]
            return str(paths[0]), str(paths[-1]), f"left: early x_t; right: the samples ({smp}, {int(stp)} steps)"
        frames = gen.trajectory(8, 0, int(stp), smp, frames=10)
        strip = save_grid(__import__("torch").cat([f[:1] for f in frames]), rd / "outputs" / "trajectory.png",
                          "ddpm", nrow=len(frames))
        gif = save_gif(frames, rd / "outputs" / "trajectory.gif")
        return str(strip), str(gif), f"x_t from pure noise to the sample ({smp}, {int(stp)} steps)"

    def do_versus(job_id, n_v, stp):
        import time as _time

        from generative.images import save_grid

        gen, rd = loaded(job_id)
        if gen.kind != "ddpm" or gen.toy:
            raise gr.Error("The comparison is for DDPM runs on images.")
        n_v, stp = min(as_int(n_v, "samples"), 64), as_int(stp, "DDPM steps")
        try:
            gen.check_request(n_v, stp)
        except StudioError as exc:
            raise fail(exc) from None
        t0 = _time.perf_counter()
        full = gen.sample(n_v, 0, None, "ddpm")
        t_full = _time.perf_counter() - t0
        t0 = _time.perf_counter()
        fast = gen.sample(n_v, 0, int(stp), "ddim")
        t_fast = _time.perf_counter() - t0
        a = save_grid(full, rd / "outputs" / "ddpm_full.png", "ddpm")
        b = save_grid(fast, rd / "outputs" / f"ddim_{int(stp)}.png", "ddpm")
        note = (f"Left: DDPM, {gen.scheduler.config.num_train_timesteps} steps, {t_full:.1f} s. Right: DDIM, "
                f"{int(stp)} steps, {t_fast:.1f} s ({t_full / t_fast:.0f}x faster), same seed.")
        if gen.cfg.data.name in ("digits", "fashion"):
            from generative.train import judge_for

            j = judge_for(gen.cfg.data)
            note += f" Classifier-Fréchet: DDPM {j.score(full)['fd']:.1f}, DDIM {j.score(fast)['fd']:.1f}."
        return str(a), str(b), note

    versus.click(do_versus, [job, n, s_steps], [out1, out2, out_note])
    start.click(do_start, [model, dataset, size, channels, path, steps, budget, seed, batch, lr, width], job,
                api_name="generate_start") \
        .then(show, job, [status, plot, grid])
    job.change(show, job, [status, plot, grid])
    timer.tick(show, job, [status, plot, grid])
    refresh.click(lambda: gr.update(choices=job_choices("generate")), None, job)
    draw.click(do_draw, [job, n, s_seed, sampler, s_steps], [out1, out2, out_note], api_name="generate_sample")
    walk.click(do_walk, job, [out1, out2, out_note])
    denoise.click(do_denoise, [job, sampler, s_steps], [out1, out2, out_note])
    model.change(lambda m: 2e-4 if m == "gan" else 1e-3, model, lr)
