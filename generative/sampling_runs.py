"""Sampling-lab runs: a config in, a result and a run folder (config.yaml, result.json, plot.png) out.

Kinds: ``draw`` (samples + summary, histogram against the density), ``mc`` (plain Monte Carlo of
E[f(X)] with its running estimate), ``is`` (importance sampling with a proposal: plain and
self-normalized estimates, weights, ESS), ``mcmc`` (random-walk Metropolis-Hastings chains:
traces, acceptance, autocorrelation, ESS for the mean and bulk ESS, rank-normalized split-R-hat).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generative import sampling as S
from generative.formula import compile_expression
from studio.config import save_config
from studio.env import home_dir
from studio.errors import StudioError
from studio.limits import check_float, check_int
from studio.limits import current as current_limits
from studio.schema import config_class

KINDS = ("draw", "mc", "is", "mcmc")


@config_class
@dataclass
class SamplingConfig:
    """One sampling-lab run (``configs/sampling/*.yaml``)."""

    distribution: str = field(default="normal", metadata={"help": "the target p"})
    params: dict = field(default_factory=dict)
    n: int = 100_000
    seed: int = 0
    function: str = field(default="x", metadata={"help": "f(x) whose expectation mc/is/mcmc estimate"})
    proposal: str = field(default="normal", metadata={"help": "q, for importance sampling"})
    proposal_params: dict = field(default_factory=dict)
    chains: int = 4
    step: float = field(default=1.0, metadata={"help": "MH random-walk step size"})
    burn_in: int = 500
    x0: list[float] = field(default_factory=list)
    out_dir: str | None = field(default=None, metadata={"help": "default: $STUDIO_HOME/runs/sampling/..."})

    def check(self, kind: str) -> SamplingConfig:
        """Refuse sizes outside ``limits`` before any work: n, chains x (n + burn-in), parameter lists."""
        lim = current_limits()
        if kind == "mcmc":
            check_int("chains", self.chains, 1, lim.mcmc_chains, "mcmc_chains")
            check_int("n", self.n, 2, lim.mcmc_draws, "mcmc_draws")
            check_int("burn_in", self.burn_in, 0, lim.mcmc_draws, "mcmc_draws")
            total = self.chains * (self.n + self.burn_in)
            if total > lim.mcmc_draws:
                raise StudioError(f"chains x (n + burn_in) = {total:,} draws; the limit is {lim.mcmc_draws:,} "
                                  "(limits.mcmc_draws)")
            check_float("step", self.step, 1e-12, 1e6)
            if len(self.x0) > 2 * lim.mcmc_chains:
                raise StudioError(f"x0 gives {len(self.x0)} values; give one start per chain (and dimension)")
        else:
            check_int("n", self.n, 2, lim.sample_n, "sample_n")
        check_int("seed", self.seed, 0, 2**63 - 1)
        for name, params in (("params", self.params), ("proposal_params", self.proposal_params)):
            for key, value in params.items():
                if isinstance(value, list) and len(value) > 64:
                    raise StudioError(f"{name}.{key} lists {len(value)} values; at most 64")
                if isinstance(value, str) and len(value) > 500:
                    raise StudioError(f"{name}.{key} is {len(value)} characters; at most 500")
        return self


def _f(cfg: SamplingConfig, dim: int):
    names = ("x",) if dim == 1 else ("x", "y")
    f = compile_expression(cfg.function, names)
    return (lambda x: np.broadcast_to(f(x), np.shape(x)[:1])) if dim == 1 else \
        (lambda x: np.broadcast_to(f(x[:, 0], x[:, 1]), (len(x),)))


def run_sampling(kind: str, cfg: SamplingConfig, plot: bool = True) -> dict:
    """Run one experiment; returns the contract's fields plus what the plots need (``arrays``)."""
    if kind not in KINDS:
        raise StudioError(f"unknown sampling run {kind!r}; choose one of: {', '.join(KINDS)}")
    cfg.check(kind)
    target = S.make_distribution(cfg.distribution, **cfg.params)
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    result: dict = {"kind": kind, "distribution": cfg.distribution, "params": target.params, "n": cfg.n,
                    "seed": cfg.seed}
    arrays: dict = {}
    if kind in ("draw", "mc"):
        x = target.sample(cfg.n, rng)
        arrays["samples"] = x
        values = x[:, 0] if (kind == "draw" and target.dim == 2) else (x if kind == "draw" else _f(cfg, target.dim)(x))
        mc = S.monte_carlo(values)
        arrays.update(running=mc["running"], band=mc["band"])
        result.update(estimate=mc["estimate"], stderr=mc["stderr"], ess=float(cfg.n))
        if kind == "draw":
            result["summary"] = _summary(x, target)
    elif kind == "is":
        proposal = S.make_distribution(cfg.proposal, **cfg.proposal_params)
        if proposal.dim != target.dim:
            raise StudioError("the proposal must have the same dimension as the target")
        res = S.importance_sampling(_f(cfg, target.dim), target, proposal, cfg.n, rng)
        plain_mc = S.monte_carlo(_f(cfg, target.dim)(target.sample(cfg.n, rng)))
        arrays.update(weights=res["weights"], samples=res["samples"])
        result.update(estimate=res["estimate"], self_normalized=res["self_normalized"], stderr=res["stderr"],
                      ess=res["ess"], proposal=cfg.proposal, proposal_params=proposal.params,
                      plain_mc_estimate=plain_mc["estimate"], plain_mc_stderr=plain_mc["stderr"],
                      variance_reduction=(plain_mc["stderr"] / res["stderr"]) ** 2 if res["stderr"] > 0 else None)
    else:
        x0 = np.asarray(cfg.x0, float).reshape(cfg.chains, -1) if cfg.x0 else \
            rng.normal(target.mean or 0.0, 2.0, (cfg.chains, target.dim))
        if target.support != (-np.inf, np.inf) and not cfg.x0:
            lo, hi = target.support
            x0 = rng.uniform(lo if math.isfinite(lo) else -1, hi if math.isfinite(hi) else 1, (cfg.chains, 1))
        mh = S.metropolis_hastings(target.logpdf, x0, cfg.n + cfg.burn_in, cfg.step, rng)
        kept = mh["samples"][:, cfg.burn_in:]
        f = _f(cfg, target.dim)
        fx = np.stack([f(c if target.dim > 1 else c[:, 0]) for c in kept])
        # stderr = sd / sqrt(ESS) needs the ESS of the mean (ArviZ's mcse(method="mean")), so ``ess`` is
        # that one, as for the other kinds; the bulk ESS (rank-normalized, az.ess's default) sits next
        # to R-hat as the convergence diagnostic.
        ess = S.ess_mean(fx)
        arrays.update(chains=mh["samples"], burn_in=cfg.burn_in, fx=fx)
        result.update(estimate=float(fx.mean()), stderr=float(fx.std(ddof=1) / math.sqrt(ess)), ess=ess,
                      ess_bulk=S.ess_bulk(fx), rhat=S.split_rhat(fx), acceptance=mh["acceptance"].tolist(),
                      chains=cfg.chains, burn_in=cfg.burn_in, step=cfg.step)
        if target.dim == 1 and target.mean is not None and cfg.function == "x":
            result["exact"] = target.mean
    result["seconds"] = round(time.perf_counter() - start, 4)
    run_dir = Path(cfg.out_dir) if cfg.out_dir else home_dir("runs", "sampling") / \
        f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{cfg.distribution}-{cfg.seed}-{time.time_ns() % 10**6:06d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    result["run_dir"] = str(run_dir)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    if plot:
        from generative.sampling_plots import plot_run

        result["plot"] = str(plot_run(kind, target, result, arrays, run_dir / "plot.png"))
    result["arrays"] = arrays
    return result


def _summary(x: np.ndarray, target: S.Distribution) -> dict:
    """Moments and quantiles of the draws, next to the true ones; does the sample cover the support?"""
    first = x if x.ndim == 1 else x[:, 0]
    out = {"mean": float(first.mean()), "std": float(first.std(ddof=1)),
           "quantiles": {q: float(np.quantile(first, q)) for q in (0.05, 0.5, 0.95)},
           "min": float(first.min()), "max": float(first.max())}
    if target.mean is not None:
        out["true_mean"] = target.mean
    if target.var is not None:
        out["true_std"] = math.sqrt(target.var)
    lo, hi = target.support
    out["inside_support"] = bool(((first >= lo) & (first <= hi)).all())
    return out
