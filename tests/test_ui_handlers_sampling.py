"""The Sampling tab's handlers called as the page calls them, with plain dicts: no browser, no server.

Each run is a real one (small n) with its plot and run folder. What only a browser shows (the slider
moving the histogram on the page) stays in tests/test_ui_sampling.py.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from studio.ui import sampling_tab


def request(**changes) -> dict:
    """The values the page sends, with the tab's defaults (a small n)."""
    v = {"distribution": "normal", "p1": 0, "p2": 1, "p3": 0, "p4": 0, "p5": 0,
         "formula": "exp(-x**2/2) * (1 + sin(3*x)**2)",
         "n": 2000, "seed": 1, "f": "x", "proposal_mean": 4, "proposal_std": 1, "step": 0.5, "chains": 2,
         "burn_in": 100}
    return {**v, **changes}


def test_picking_a_distribution_relabels_the_sliders():
    ups = sampling_tab.pick_distribution({"distribution": "exponential"})
    assert set(ups) == {"p1", "p2", "p3", "p4", "p5", "formula"}
    assert ups["p1"]["visible"] and ups["p1"]["label"] == "rate" and ups["p1"]["value"] == 1
    assert (ups["p1"]["minimum"], ups["p1"]["maximum"]) == (0.1, 5)
    assert not ups["p2"]["visible"] and not ups["p3"]["visible"] and not ups["formula"]["visible"]
    ups = sampling_tab.pick_distribution({"distribution": "formula"})
    assert ups["formula"]["visible"] and [ups[p]["label"] for p in ("p1", "p2")] == ["low", "high"]
    assert not ups["p3"]["visible"]
    t = sampling_tab.pick_distribution({"distribution": "student_t"})
    assert [t[p]["label"] for p in ("p1", "p2", "p3")] == ["df", "loc", "scale"] and t["p3"]["visible"]


def test_a_draw_returns_its_plot_and_estimate():
    out = sampling_tab.run(request(p2=2.5), kind="draw")
    assert set(out) == {"plot_draw", "result_draw"}
    assert Path(out["plot_draw"]).is_file()
    text = out["result_draw"]
    assert text.startswith("**estimate** ") and "(true 0 / 2.5)" in text and "n 2,000 · seed 1" in text
    assert "inside the support: yes" in text
    assert "run folder: `$STUDIO_HOME" in text  # no server path in what the page shows


def test_monte_carlo_estimates_the_expectation_of_f():
    out = sampling_tab.run(request(n=20_000, f="x**2"), kind="mc")
    estimate = float(out["result_mc"].split("**estimate** ")[1].split(" ")[0])
    assert estimate == pytest.approx(1.0, abs=0.05) and Path(out["plot_mc"]).is_file()


def test_importance_sampling_uses_the_proposal_sliders():
    out = sampling_tab.run(request(f="x > 2", proposal_mean=2.5, proposal_std=1), kind="is")
    assert set(out) == {"plot_is", "result_is"}
    assert "self-normalized" in out["result_is"] and "plain MC with the same n" in out["result_is"]


def test_mcmc_keeps_n_small_enough_for_the_tab():
    out = sampling_tab.run(request(n=1_000_000, chains=2, burn_in=100), kind="mcmc")
    assert "n 20,000" in out["result_mcmc"] and "burn-in 100" in out["result_mcmc"]
    assert "R-hat" in out["result_mcmc"] and Path(out["plot_mcmc"]).is_file()


def test_the_coin_posterior_takes_whole_counts():
    out = sampling_tab.run(request(distribution="coin", p1=7, p2=3, n=500, chains=2), kind="mcmc")
    assert "exact mean" in out["result_mcmc"]
    with pytest.raises(gr.Error, match="heads must be a whole number"):
        sampling_tab.run(request(distribution="coin", p1=7.5, p2=3), kind="mcmc")


def test_the_histogram_gif_is_written_in_the_run_folder():
    out = sampling_tab.histogram_gif(request(n=500))
    assert list(out) == ["gif"] and out["gif"].endswith("histogram.gif") and Path(out["gif"]).is_file()


@pytest.mark.parametrize("kind, changes, says", [
    ("draw", {"n": 10**12}, "limits.sample_n"),
    ("mc", {"n": "lots"}, "n must be a whole number"),
    ("draw", {"p2": float("nan")}, "std must be a finite number"),
    ("mc", {"f": "__import__('os').system('true')"}, "not allowed"),
    ("draw", {"distribution": "formula", "formula": "[c for c in ().__class__.__subclasses__()]"}, "not allowed"),
    ("draw", {"distribution": "cauchy"}, "distribution must be one of"),
    ("is", {"proposal_std": "wide"}, "proposal std must be a finite number"),
    ("mcmc", {"chains": 10**6}, "chains"),
    ("draw", {"f": "x" * 20_000}, "limits.message_chars"),
])
def test_bad_values_are_refused_with_a_sentence(kind, changes, says):
    with pytest.raises(gr.Error, match=says):
        sampling_tab.run(request(**changes), kind=kind)


def test_an_unknown_distribution_is_refused_when_picked_too():
    with pytest.raises(gr.Error, match="distribution must be one of"):
        sampling_tab.pick_distribution({"distribution": "../etc"})
