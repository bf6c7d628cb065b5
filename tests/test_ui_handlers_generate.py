"""The Generate tab's handlers called as the page calls them, with plain dicts: no browser, no server,
no training. The config is built and refused without submitting a job; a job's rendering is checked on
a run folder written here by hand, as the training loop writes it (status.json, events.jsonl,
metrics.jsonl, samples/).

What only a browser shows (a real job's curve and sample grid appearing, then Cancel) stays in
tests/test_ui_generate.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from studio.jobs import write_status
from studio.paths import Roots, uploads_dir
from studio.ui import generate_tab as gen
from studio.ui import jobs_ui


@pytest.fixture()
def services():
    return gen.GenerateServices(Roots.for_server())


def request(**changes) -> dict:
    """The values the page sends on Start training, with the tab's defaults."""
    v = {"model": "vae", "dataset": "digits", "size": 16, "channels": 1, "path": "", "steps": 2000, "budget": 0,
         "seed": 0, "batch": 64, "lr": 0.001, "width": 32, "conditional": False, "patience": 0}
    assert list(v) == gen.START  # the endpoint's positional order
    return {**v, **changes}


def refusal(services, **changes) -> str:
    with pytest.raises(gr.Error) as err:
        gen.make_config(request(**changes), services.roots)
    return err.value.message


# --- the config ------------------------------------------------------------------------------------------
def test_the_config_takes_the_widgets_values(services):
    cfg = gen.make_config(request(model="ddpm", size="28", channels="3", steps=500, budget="", seed=None,
                                  batch=16, lr="0.0002", width=8), services.roots)
    assert (cfg.model, cfg.data.name, cfg.data.size, cfg.data.channels, cfg.data.path) == ("ddpm", "digits", 28, 3,
                                                                                          None)
    assert (cfg.steps, cfg.budget_seconds, cfg.seed, cfg.batch_size, cfg.lr, cfg.width) == (500, 0.0, 0, 16, 2e-4, 8)
    assert cfg.sample_every == cfg.checkpoint_every == 25  # steps // 20, within 10..200
    toy = gen.make_config(request(dataset="moons", steps=5), services.roots)
    assert toy.data.name == "moons" and toy.sample_every == toy.checkpoint_every == 10
    assert gen.make_config(request(steps=100_000), services.roots).sample_every == 200


def test_an_image_folder_inside_the_roots_is_taken(services):
    folder = uploads_dir() / "my-images"
    folder.mkdir(exist_ok=True)
    cfg = gen.make_config(request(dataset="folder", path=f"  {folder}  "), services.roots)
    assert cfg.data.path == str(folder.resolve())


@pytest.mark.parametrize("field, name, kind", [
    ("steps", "steps", "whole"), ("size", "image size", "whole"), ("channels", "colour", "whole"),
    ("budget", "time budget", "finite"), ("seed", "seed", "whole"), ("batch", "batch size", "whole"),
    ("lr", "learning rate", "finite"), ("width", "width", "whole"),
])
@pytest.mark.parametrize("bad", ["lots", float("inf"), "nan"])
def test_every_number_is_checked(services, field, name, kind, bad):
    assert refusal(services, **{field: bad}) == f"{name} must be a {kind} number"


@pytest.mark.parametrize("changes, says", [
    ({"dataset": "imagenet"}, "dataset must be one of: digits, fashion, folder, gmm, moons, rings"),
    ({"dataset": None}, "dataset must be one of"),
    ({"model": "transformer"}, "unknown model 'transformer'"),
    ({"size": 18}, "data.size must be a multiple of 4"),
    ({"channels": 2}, "data.channels must be 1 or 3"),
    ({"steps": 2.5}, "steps must be a whole number"),
])
def test_bad_requests_are_refused_with_a_sentence(services, changes, says):
    assert says in refusal(services, **changes)


def test_folders_outside_the_allowed_roots_are_refused_alike(services):
    etc, nowhere = refusal(services, dataset="folder", path="/etc"), refusal(services, dataset="folder",
                                                                              path="/nonexistent")
    assert "outside the folders" in etc
    assert etc.replace("etc", "X") == nowhere.replace("nonexistent", "X")
    assert "outside the folders" in refusal(services, dataset="fashion", path="configs/../../../../etc")


@pytest.mark.parametrize("changes, limit", [
    ({"steps": 10**9}, "limits.train_steps"), ({"width": 10**6}, "limits.width"),
    ({"batch": 10**6}, "limits.batch_size"), ({"size": 4096}, "limits.image_size"),
])
def test_sizes_over_the_limits_are_refused(services, changes, limit):
    assert limit in refusal(services, **changes)


def test_a_folder_without_images_is_refused_before_any_job(services):
    empty = uploads_dir() / "no-images"
    empty.mkdir(exist_ok=True)
    before = [j.id for j in jobs_ui.jobs().list()]
    with pytest.raises(gr.Error) as err:
        gen.start_job(request(dataset="folder", path=str(empty)), services=services)
    assert str(uploads_dir()) not in str(err.value)
    with pytest.raises(gr.Error, match="outside the folders"):
        gen.start_job(request(dataset="folder", path="/etc"), services=services)
    assert [j.id for j in jobs_ui.jobs().list()] == before


def test_the_learning_rate_follows_the_model():
    assert gen.default_lr({"model": "gan"}) == {"lr": 2e-4}
    assert gen.default_lr({"model": "vae"}) == {"lr": 1e-3} == gen.default_lr({"model": "ddpm"})


# --- a job rendered from its run folder ------------------------------------------------------------------
def hand_written_run(run: Path, state: str = "running") -> str:
    """A run folder as a VAE on digits leaves it after 40 steps, registered as a job; returns its id."""
    from PIL import Image

    (run / "samples").mkdir(parents=True)
    write_status(run, state=state, model="vae", dataset="digits", step=40, steps=100, train_seconds=12.5,
                 error="the loss became NaN" if state == "failed" else None)
    events = [{"step": s, "loss": 1 / s, "kl": 0.1 * s} for s in (10, 20, 30, 40)]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 40, "fd": 123.4, "confidence": 0.81, "nn_ratio": 1.3}))
    for i in range(2):
        Image.new("L", (8, 8)).save(run / "samples" / f"step_{i}.png")
    return jobs_ui.jobs().register("generate", ["generate", "train"], run, state=state).id


def test_a_run_shows_its_status_curves_and_latest_grid(tmp_path):
    job_id = hand_written_run(tmp_path / "vae_digits-1", state="cancelled")
    out = gen.show({"job": job_id})
    assert set(out) == set(gen.SHOWN)
    assert out["status"].startswith("**cancelled** · vae on digits · step 40/100 · 12.5 s · classifier-Fréchet "
                                    "123.4, confidence 0.81, nearest-neighbour ratio 1.30 · run folder `")
    assert "vae_digits-1" in out["status"] and str(tmp_path) not in out["status"]
    assert "**Error:**" not in out["status"]
    loss, fd = out["plot"].axes[:2]
    assert list(loss.get_lines()[0].get_xdata()) == [10, 20, 30, 40] and list(fd.get_lines()[0].get_ydata()) == [123.4]
    assert Path(out["grid"]).parent == tmp_path / "vae_digits-1" / "samples"


def test_a_failed_run_says_why(tmp_path):
    job_id = hand_written_run(tmp_path / "vae_digits-2", state="failed")
    assert "**Error:** the loss became NaN" in gen.show({"job": job_id})["status"]


@pytest.mark.parametrize("job", [None, "", "deadbeef", "../../etc"])
def test_no_or_an_unknown_job_shows_nothing(job):
    assert gen.show({"job": job}) == {"status": "No job selected."}


def test_refresh_lists_generate_jobs_only(tmp_path):
    job_id = hand_written_run(tmp_path / "vae_digits-3", state="cancelled")
    choices = gen.refresh({})["job"]["choices"]
    assert (f"{job_id} · cancelled · vae_digits-3 · step 40", job_id) in choices
    assert all(jobs_ui.jobs().get(v).kind == "generate" for _, v in choices)


def test_a_tick_sent_before_start_does_not_draw_the_previous_job_over_the_new_one(tmp_path):
    """The race a user saw: the 2 s tick left the page showing job A, Start then picked job B, and the tick's
    answer (A's progress, and A put back in the picker) arrived after Start's."""
    a = hand_written_run(tmp_path / "vae_digits-4", state="cancelled")
    watch, pick = jobs_ui.watched(gen.show, "generate", tick=True), jobs_ui.watched(gen.show, "generate")
    labels = jobs_ui.job_choices("generate")
    pick({"job": a, "labels": labels, "log_open": False}, session="page-1")
    b = hand_written_run(tmp_path / "vae_digits-5", state="cancelled")  # Start, on the same page
    jobs_ui.PICKS.pick("page-1", b)
    stale = {"job": a, "labels": labels, "log_open": False}
    assert watch(stale, session="page-1") == {}  # nothing of A is drawn, the picker is left alone
    # the same tick from another page that still shows A is answered, with B in the list but A kept picked
    other = watch(stale, session="page-2")
    assert "vae_digits-4" in other["status"] and b in [i for _, i in other["job"]["choices"]]
    assert "value" not in other["job"]  # A's own label did not change: nothing to put back in the input
    fresh = watch({"job": b, "labels": labels, "log_open": False}, session="page-1")
    assert "vae_digits-5" in fresh["status"]


def test_the_pick_memory_is_bounded():
    picks = jobs_ui.Picks()
    for i in range(picks.MAX + 10):
        picks.pick(f"page-{i}", "job")
    assert not picks.stale("page-0", "other") and picks.stale(f"page-{picks.MAX + 9}", "other")


# --- sampling from a run ---------------------------------------------------------------------------------
SAMPLING = [(gen.draw_samples, {"n": 4, "s_seed": 0, "sampler": "ddim", "s_steps": 10}),
            (gen.walk_latent, {}), (gen.denoise_trajectory, {"sampler": "ddim", "s_steps": 10}),
            (gen.compare_samplers, {"n": 4, "s_steps": 10})]


@pytest.mark.parametrize("handler, values", SAMPLING)
def test_sampling_needs_a_job_with_a_model(handler, values, tmp_path):
    for job in (None, "deadbeef", "../../etc"):
        with pytest.raises(gr.Error, match="Pick a job first."):
            handler({"job": job, **values})
    job_id = hand_written_run(tmp_path / "vae_digits-4", state="cancelled")
    with pytest.raises(gr.Error, match="is not a generator run folder|has no trained model yet") as err:
        handler({"job": job_id, **values})
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize("job", [None, "deadbeef"])
def test_cancel_and_resume_refuse_no_or_an_unknown_generate_job(job):
    says = "Pick a job first." if job is None else "no job 'deadbeef'"
    with pytest.raises(gr.Error, match=says):
        jobs_ui.cancel_job({"job": job})
    with pytest.raises(gr.Error, match=says):
        jobs_ui.resume_job({"job": job}, kind="generate")


def test_a_toy_runs_mmd_is_shown_where_images_show_the_frechet_distance():
    assert gen.metric_text({"step": 5, "mmd": 0.01234}) == " · MMD to fresh data 0.0123"
    assert "classifier-Fréchet 12.3, confidence 0.90" in gen.metric_text(
        {"step": 5, "fd": 12.34, "confidence": 0.9, "nn_ratio": 1.1})
    fig = gen.loss_plot([{"step": 1, "loss": 2.0}], "vae", [{"step": 1, "mmd": 0.2}, {"step": 2, "mmd": 0.1}])
    assert fig.axes[1].get_title().startswith("MMD") and list(fig.axes[1].lines[0].get_ydata()) == [0.2, 0.1]


def test_a_conditional_run_draws_one_row_per_class_or_the_class_picked(tmp_path):
    from PIL import Image

    from generative.train import GenConfig, train

    run = tmp_path / "ddpm_digits-c"
    train(GenConfig(model="ddpm", steps=4, batch_size=8, width=8, sample_every=100, checkpoint_every=100,
                    log_every=2, conditional=True, metrics=False).check(), run)
    job_id = jobs_ui.jobs().register("generate", ["generate", "train"], run, state="finished").id
    values = {"job": job_id, "n": 20, "s_seed": 0, "sampler": "ddim", "s_steps": 4}
    grid = gen.draw_samples({**values, "label": gen.ALL_CLASSES, "guidance": 3})
    assert grid["out_note"] == "20 samples, seed 0, one row per class (2 each), guidance 3, ddim at 4 steps"
    assert Image.open(grid["out1"]).size[1] > 4 * Image.open(grid["out1"]).size[0]  # 10 rows of 2
    one = gen.draw_samples({**values, "n": 4, "label": 7, "guidance": 0})
    assert one["out_note"] == "4 samples, seed 0, class 7 (7), guidance 0, ddim at 4 steps"
    for bad, says in (({"label": 10}, "class must be one of"), ({"label": "7; rm"}, "class must be one of"),
                      ({"label": 7, "guidance": 99}, "guidance"), ({"label": 7, "guidance": "x"}, "guidance")):
        with pytest.raises(gr.Error, match=says):
            gen.draw_samples({**values, **bad})
    cfg = gen.make_config(request(model="ddpm", conditional=True, patience=3), Roots.for_server())
    assert cfg.conditional and cfg.early_stop_patience == 3
    with pytest.raises(gr.Error, match="labelled dataset"):
        gen.make_config(request(model="ddpm", dataset="moons", conditional=True), Roots.for_server())
