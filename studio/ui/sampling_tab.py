"""The Sampling tab: distributions, Monte Carlo, importance sampling and MCMC, with plots.

Every button builds a :class:`SamplingConfig` from the widgets and calls
:func:`generative.sampling_runs.run_sampling`; the run folder keeps config, result and plot.
"""

from __future__ import annotations

import gradio as gr

from generative.sampling_runs import SamplingConfig, run_sampling
from studio.errors import StudioError
from studio.ui.guard import as_float, as_int, choice, fail, public, text

# distribution -> [(parameter, min, max, default)] shown on the three sliders
PARAMS = {
    "normal": [("mean", -5, 5, 0), ("std", 0.1, 5, 1)],
    "uniform": [("low", -5, 5, 0), ("high", -5, 5, 1)],
    "exponential": [("rate", 0.1, 5, 1)],
    "beta": [("a", 0.1, 10, 2), ("b", 0.1, 10, 5)],
    "gamma": [("shape", 0.1, 10, 2), ("scale", 0.1, 5, 1)],
    "student_t": [("df", 0.5, 30, 3), ("loc", -5, 5, 0), ("scale", 0.1, 5, 1)],
    "mixture": [],
    "banana": [("b", 0, 2, 0.5), ("sigma", 0.5, 4, 2)],
    "formula": [("low", -10, 0, -5), ("high", 0, 10, 5)],
    "coin": [("heads", 0, 100, 7), ("tails", 0, 100, 3)],
}

EXPLAIN = {
    "draw": "**Reading the plot.** The histogram of the draws should hug the black density; the running mean "
            "settles inside its 95% band, which narrows like 1/√n.",
    "mc": "**Monte Carlo.** E[f(X)] ≈ mean of f(xᵢ). The standard error is sd(f)/√n: four times the draws halve "
          "the error, whatever the dimension.",
    "is": "**What the ESS means.** ESS = (Σw)²/Σw² is how many equal-weight draws the weighted sample is worth. "
          "**Where a proposal fails:** when q puts little mass where p·|f| is large, a few huge weights dominate "
          "and the ESS collapses. Try the proposal mean 0 and std 0.3 for P(X > 4).",
    "mcmc": "**MCMC.** Traces should look like fuzzy caterpillars that overlap; R-hat near 1.00 (below 1.01) says "
            "the chains agree. Acceptance around 0.2–0.5 is healthy for a random walk: a tiny step accepts "
            "everything but barely moves, a huge one is almost always refused. ESS counts the independent draws "
            "the correlated chain is worth. With **coin**, the black curve is the exact Beta posterior.",
}


def build_sampling_tab() -> None:
    with gr.Row():
        with gr.Column(scale=1):
            dist = gr.Dropdown(list(PARAMS), value="normal", label="Distribution (target)", elem_id="samp-dist")
            sliders = [gr.Slider(-5, 5, value=0, label="mean", elem_id="samp-p1"),
                       gr.Slider(0.1, 5, value=1, label="std", elem_id="samp-p2"),
                       gr.Slider(0, 1, value=0, label="-", visible=False, elem_id="samp-p3")]
            expr = gr.Textbox("exp(-x**2/2) * (1 + sin(3*x)**2)", label="Density formula (formula)", visible=False)
            n = gr.Number(100_000, precision=0, label="Sample size n", elem_id="samp-n")
            seed = gr.Number(0, precision=0, label="Seed")
            function = gr.Textbox("x", label="f(x) to estimate E[f(X)] (mc, is, mcmc)", elem_id="samp-f")
        with gr.Column(scale=3):
            with gr.Tabs():
                outputs = {}
                for kind, title in (("draw", "Draw"), ("mc", "Monte Carlo"), ("is", "Importance sampling"),
                                    ("mcmc", "MCMC")):
                    with gr.Tab(title, id=f"samp-{kind}"):
                        extra = []
                        if kind == "is":
                            with gr.Row():
                                extra = [gr.Slider(-5, 8, value=4, label="proposal mean (normal)"),
                                         gr.Slider(0.1, 5, value=1, label="proposal std")]
                        if kind == "mcmc":
                            with gr.Row():
                                extra = [gr.Slider(0.01, 5, value=0.5, label="step size"),
                                         gr.Slider(1, 8, value=4, step=1, label="chains"),
                                         gr.Slider(0, 5000, value=500, step=100, label="burn-in")]
                        run = gr.Button(f"Run {title.lower()}", variant="primary", elem_id=f"samp-run-{kind}")
                        image = gr.Image(label="plot", type="filepath", elem_id=f"samp-plot-{kind}")
                        result = gr.Markdown(elem_id=f"samp-result-{kind}")
                        gr.Markdown(EXPLAIN[kind])
                        if kind == "draw":
                            gif_btn = gr.Button("Animated histogram (GIF)", elem_id="samp-gif")
                            gif = gr.Image(label="histogram as n grows", type="filepath", elem_id="samp-gif-img")
                        outputs[kind] = (run, extra, image, result)

    def on_dist(name):
        specs = PARAMS[name]
        ups = []
        for i in range(3):
            if i < len(specs):
                p, lo, hi, v = specs[i]
                ups.append(gr.update(visible=True, label=p, minimum=lo, maximum=hi, value=v))
            else:
                ups.append(gr.update(visible=False))
        return [*ups, gr.update(visible=name == "formula")]

    dist.change(on_dist, dist, [*sliders, expr])

    def config(name, s1, s2, s3, formula, n_v, seed_v, f) -> SamplingConfig:
        choice(name, list(PARAMS), "distribution")
        values = [as_float(v, p) for (p, *_), v in zip(PARAMS[name], (s1, s2, s3), strict=False)]
        params = {p: v for (p, *_), v in zip(PARAMS[name], values, strict=False)}
        if name == "formula":
            params["expr"] = text(formula, "the density formula")
        if name == "coin":
            params = {k: as_int(v, k) for k, v in params.items()}
        return SamplingConfig(distribution=name, params=params, n=as_int(n_v, "n", 0), seed=as_int(seed_v, "seed", 0),
                              function=text(f, "f(x)") or "x")

    def runner(kind):
        def go(name, s1, s2, s3, formula, n_v, seed_v, f, *extra):
            cfg = config(name, s1, s2, s3, formula, n_v, seed_v, f)
            if kind == "is":
                cfg.proposal = "normal"
                cfg.proposal_params = {"mean": as_float(extra[0], "proposal mean"),
                                       "std": as_float(extra[1], "proposal std")}
            if kind == "mcmc":
                cfg.step, cfg.chains = as_float(extra[0], "step size"), as_int(extra[1], "chains")
                cfg.burn_in = as_int(extra[2], "burn-in")
                cfg.n = min(cfg.n, 20_000)  # MH steps are sequential: keep the tab responsive
            try:
                res = run_sampling(kind, cfg)
            except StudioError as exc:
                raise fail(exc) from None
            return res["plot"], describe(kind, res)
        return go

    base = [dist, *sliders, expr, n, seed, function]
    for kind, (run, extra, image, result) in outputs.items():
        run.click(runner(kind), [*base, *extra], [image, result], api_name=f"sample_{kind}")

    def make_gif(name, s1, s2, s3, formula, n_v, seed_v, f):
        from pathlib import Path

        from generative import sampling as S
        from generative.sampling_plots import histogram_gif

        cfg = config(name, s1, s2, s3, formula, min(as_int(n_v, "n", 0), 100_000), seed_v, f)
        try:
            d = S.make_distribution(cfg.distribution, **cfg.params)
            res = run_sampling("draw", cfg, plot=False)
        except StudioError as exc:
            raise fail(exc) from None
        return str(histogram_gif(res["arrays"]["samples"], d, Path(res["run_dir"]) / "histogram.gif"))

    gif_btn.click(make_gif, base, gif, api_name="sample_gif")


def describe(kind: str, res: dict) -> str:
    """The result as a short Markdown block."""
    lines = [f"**estimate** {res['estimate']:.6g} ± {res['stderr']:.3g} (stderr) · **ESS** {res['ess']:,.0f} · "
             f"n {res['n']:,} · seed {res['seed']}"]
    if kind == "draw":
        s = res["summary"]
        true = f" (true {s['true_mean']:.4g} / {s['true_std']:.4g})" if "true_std" in s else ""
        lines.append(f"sample mean {s['mean']:.4g}, std {s['std']:.4g}{true}; 5/50/95% quantiles "
                     f"{', '.join(f'{v:.3g}' for v in s['quantiles'].values())}; "
                     f"all draws inside the support: {'yes' if s['inside_support'] else 'NO'}")
    if kind == "is":
        lines.append(f"self-normalized {res['self_normalized']:.6g} · plain MC with the same n "
                     f"{res['plain_mc_estimate']:.6g} ± {res['plain_mc_stderr']:.3g}"
                     + (f" · variance reduction {res['variance_reduction']:,.0f}x" if res.get("variance_reduction")
                        else ""))
    if kind == "mcmc":
        accept = sum(res["acceptance"]) / len(res["acceptance"])
        exact = f" · exact mean {res['exact']:.6g}" if "exact" in res else ""
        lines.append(f"R-hat {res['rhat']:.4f} · acceptance {accept:.2f} · burn-in {res['burn_in']}{exact}")
    lines.append(f"run folder: `{public(res['run_dir'])}`")
    return "\n\n".join(lines)
