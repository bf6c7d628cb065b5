"""`studio sample draw|mc|is|mcmc CONFIG.yaml [key=value ...]`: the sampling lab from a terminal."""

from __future__ import annotations

import json
from importlib import import_module

from studio.cli_common import config_keys_help

CONTRACT = ("estimate", "stderr", "ess", "n", "seed", "run_dir")


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="sampling lab: draw, Monte Carlo, importance sampling, MCMC",
                       description="Each run writes config.yaml, result.json and plot.png to its run folder.")
    p.add_argument("kind", choices=["draw", "mc", "is", "mcmc"])
    p.add_argument("config", help="a YAML under configs/sampling/ (or your own)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. n=1000000 seed=3 params.std=2")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-plot", action="store_true", help="skip plot.png (faster)")
    p.set_defaults(handler=cmd_sample)
    config_keys_help(p, lambda: import_module("generative.sampling_runs").SamplingConfig)


def cmd_sample(args) -> int:
    from generative.sampling_runs import SamplingConfig, run_sampling
    from studio.config import load_config

    cfg = load_config(SamplingConfig, args.config, args.overrides)
    result = run_sampling(args.kind, cfg, plot=not args.no_plot)
    result.pop("arrays")
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    print(f"{args.kind} · {cfg.distribution} {result['params']} · n = {cfg.n} · seed {cfg.seed}")
    print(f"estimate {result['estimate']:.6g} ± {result['stderr']:.3g} (stderr), ESS {result['ess']:.0f}")
    for key in ("self_normalized", "plain_mc_estimate", "variance_reduction", "rhat", "exact"):
        if result.get(key) is not None:
            print(f"{key.replace('_', ' ')}: {result[key]:.6g}")
    print(f"run folder: {result['run_dir']}")
    return 0
