"""The Sampling tab: distributions, Monte Carlo, importance sampling and MCMC, with plots.

Layout and wiring live in :func:`build_sampling_tab`; the handlers are module-level functions over
plain ``{name: value}`` dicts (see :mod:`studio.ui.wiring`), so they are tested without a browser: every
run builds a :class:`SamplingConfig` from the widgets (:func:`config_of`) and calls
:func:`generative.sampling_runs.run_sampling`; the run folder keeps config, result and plot.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from generative.sampling_runs import SamplingConfig, run_sampling
from studio.errors import StudioError
from studio.ui.guard import as_float, as_int, choice, fail, public, text
from studio.ui.wiring import Values, on

# distribution -> [(parameter, min, max, default)] shown on the three sliders
PARAMS = {
    "normal": [("mean", -5, 5, 0), ("std", 0.1, 5, 1)],
    "uniform": [("low", -5, 5, 0), ("high", -5, 5, 1)],
    "exponential": [("rate", 0.1, 5, 1)],
    "beta": [("a", 0.1, 10, 2), ("b", 0.1, 10, 5)],
    "gamma": [("shape", 0.1, 10, 2), ("scale", 0.1, 5, 1)],
    "student_t": [("df", 0.5, 30, 3), ("loc", -5, 5, 0), ("scale", 0.1, 5, 1)],
    "mixture": [("weight of the first", 0.01, 0.99, 0.3), ("mean 1", -5, 5, -2), ("std 1", 0.1, 3, 0.5),
                ("mean 2", -5, 5, 2), ("std 2", 0.1, 3, 1)],
    "banana": [("b", 0, 2, 0.5), ("sigma", 0.5, 4, 2)],
    "formula": [("low", -10, 0, -5), ("high", 0, 10, 5)],
    "coin": [("heads", 0, 100, 7), ("tails", 0, 100, 3)],
}

TITLES = {"draw": "Draw", "mc": "Monte Carlo", "is": "Importance sampling", "mcmc": "MCMC"}
SLIDERS = ["p1", "p2", "p3", "p4", "p5"]
LATER = {"p4": 0, "p5": 0}  # sliders added after the endpoints were published: last, and optional
MCMC_MAX = 20_000  # MH steps per chain in the tab: each step depends on the last, so n cannot be vectorised
# each run's inputs in the order an API client passes them positionally: the shared ones, then the run's own
BASE = ["distribution", *SLIDERS[:3], "formula", "n", "seed", "f"]
EXTRA = {"draw": [], "mc": [], "is": ["proposal_mean", "proposal_std"], "mcmc": ["step", "chains", "burn_in"]}

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


# --- handlers ------------------------------------------------------------------------------------------
def pick_distribution(v: Values) -> Values:
    """The three sliders take the distribution's parameters (unused ones hide); the formula box shows for formula."""
    name = choice(v["distribution"], list(PARAMS), "distribution")
    specs = PARAMS[name]
    ups: Values = {}
    for i, slot in enumerate(SLIDERS):
        if i < len(specs):
            p, lo, hi, value = specs[i]
            ups[slot] = gr.update(visible=True, label=p, minimum=lo, maximum=hi, value=value)
        else:
            ups[slot] = gr.update(visible=False)
    return {**ups, "formula": gr.update(visible=name == "formula")}


def config_of(v: Values) -> SamplingConfig:
    """The run the shared widgets ask for: the target's parameters by name, n, seed and f(x)."""
    name = choice(v["distribution"], list(PARAMS), "distribution")
    values = [as_float(v[slot], p) for (p, *_), slot in zip(PARAMS[name], SLIDERS, strict=False)]
    params = {p: value for (p, *_), value in zip(PARAMS[name], values, strict=False)}
    if name == "formula":
        params["expr"] = text(v["formula"], "the density formula")
    if name == "coin":
        params = {k: as_int(value, k) for k, value in params.items()}
    if name == "mixture":  # two normal components from the five sliders
        w = min(max(params["weight of the first"], 0.01), 0.99)
        params = {"weights": [w, 1 - w], "means": [params["mean 1"], params["mean 2"]],
                  "stds": [params["std 1"], params["std 2"]]}
    return SamplingConfig(distribution=name, params=params, n=as_int(v["n"], "n", 0),
                          seed=as_int(v["seed"], "seed", 0), function=text(v["f"], "f(x)") or "x")


def run(v: Values, *, kind: str) -> Values:
    """One run of ``kind`` (draw, mc, is, mcmc): its plot and its result as Markdown."""
    cfg = config_of(v)
    if kind == "is":
        cfg.proposal = "normal"
        cfg.proposal_params = {"mean": as_float(v["proposal_mean"], "proposal mean"),
                               "std": as_float(v["proposal_std"], "proposal std")}
    if kind == "mcmc":
        cfg.step, cfg.chains = as_float(v["step"], "step size"), as_int(v["chains"], "chains")
        cfg.burn_in = as_int(v["burn_in"], "burn-in")
        asked, cfg.n = cfg.n, min(cfg.n, MCMC_MAX)
    try:
        res = run_sampling(kind, cfg)
    except StudioError as exc:
        raise fail(exc) from None
    note = ""
    if kind == "mcmc" and asked > MCMC_MAX:
        note = (f"\n\n**n = {asked:,} was asked; the tab runs {MCMC_MAX:,} steps per chain**: each Metropolis step "
                "needs the one before, so the chain cannot be computed in one vectorised pass and more steps "
                "would keep the page waiting. `studio sample mcmc CONFIG.yaml n=N` runs any n.")
    return {f"plot_{kind}": res["plot"], f"result_{kind}": describe(kind, res) + note}


def histogram_gif(v: Values) -> Values:
    """The draws' histogram as n grows, as a GIF (at most 100,000 draws)."""
    from generative import sampling as S
    from generative.sampling_plots import histogram_gif as gif_of

    cfg = config_of({**v, "n": min(as_int(v["n"], "n", 0), 100_000)})
    try:
        d = S.make_distribution(cfg.distribution, **cfg.params)
        res = run_sampling("draw", cfg, plot=False)
    except StudioError as exc:
        raise fail(exc) from None
    return {"gif": str(gif_of(res["arrays"]["samples"], d, Path(res["run_dir"]) / "histogram.gif"))}


# --- layout ---------------------------------------------------------------------------------------------
def _target(ui: dict) -> None:
    ui["distribution"] = gr.Dropdown(list(PARAMS), value="normal", label="Distribution (target)", elem_id="samp-dist")
    ui["p1"] = gr.Slider(-5, 5, value=0, label="mean", elem_id="samp-p1")
    ui["p2"] = gr.Slider(0.1, 5, value=1, label="std", elem_id="samp-p2")
    for slot in SLIDERS[2:]:
        ui[slot] = gr.Slider(0, 1, value=0, label="-", visible=False, elem_id=f"samp-{slot}")
    ui["formula"] = gr.Textbox("exp(-x**2/2) * (1 + sin(3*x)**2)", label="Density formula (formula)", visible=False)
    ui["n"] = gr.Number(100_000, precision=0, label="Sample size n", elem_id="samp-n")
    ui["seed"] = gr.Number(0, precision=0, label="Seed")
    ui["f"] = gr.Textbox("x", label="f(x) to estimate E[f(X)] (mc, is, mcmc)", elem_id="samp-f")


def _extras(ui: dict, kind: str) -> None:
    if kind == "is":
        with gr.Row():
            ui["proposal_mean"] = gr.Slider(-5, 8, value=4, label="proposal mean (normal)")
            ui["proposal_std"] = gr.Slider(0.1, 5, value=1, label="proposal std")
    if kind == "mcmc":
        with gr.Row():
            ui["step"] = gr.Slider(0.01, 5, value=0.5, label="step size")
            ui["chains"] = gr.Slider(1, 8, value=4, step=1, label="chains")
            ui["burn_in"] = gr.Slider(0, 5000, value=500, step=100, label="burn-in")


def _run_tab(ui: dict, kind: str, title: str) -> None:
    _extras(ui, kind)
    ui[f"run_{kind}"] = gr.Button(f"Run {title.lower()}", variant="primary", elem_id=f"samp-run-{kind}")
    ui[f"plot_{kind}"] = gr.Image(label="plot", type="filepath", elem_id=f"samp-plot-{kind}")
    ui[f"result_{kind}"] = gr.Markdown(elem_id=f"samp-result-{kind}")
    gr.Markdown(EXPLAIN[kind])
    if kind == "draw":
        ui["gif_btn"] = gr.Button("Animated histogram (GIF)", elem_id="samp-gif")
        ui["gif"] = gr.Image(label="histogram as n grows", type="filepath", elem_id="samp-gif-img")


def _wire(ui: dict) -> None:
    on(ui["distribution"].change, pick_distribution, ui, ["distribution"], [*SLIDERS, "formula"], api_name="on_dist")
    for kind in TITLES:
        on(ui[f"run_{kind}"].click, partial(run, kind=kind), ui, [*BASE, *EXTRA[kind], *LATER],
           [f"plot_{kind}", f"result_{kind}"], defaults=LATER, api_name=f"sample_{kind}")
    on(ui["gif_btn"].click, histogram_gif, ui, [*BASE, *LATER], ["gif"], defaults=LATER, api_name="sample_gif")


def build_sampling_tab() -> None:
    """Widgets and events of the Sampling tab."""
    ui: dict = {}
    with gr.Row():
        with gr.Column(scale=1):
            _target(ui)
        with gr.Column(scale=3), gr.Tabs():
            for kind, title in TITLES.items():
                with gr.Tab(title, id=f"samp-{kind}"):
                    _run_tab(ui, kind, title)
    _wire(ui)
