"""Generators (VAE, DCGAN, DDPM), their data, run folders, and the background job runner."""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from generative.data import load_images, load_toy
from generative.generate import load_generator
from generative.images import save_gif
from generative.modules import build_module
from generative.train import GenConfig, read_events, read_status, train
from studio.errors import StudioError
from studio.jobs import SPAWN_GRACE_S, Jobs
from tests.conftest import run_studio

TINY = dict(steps=60, batch_size=32, width=16, log_every=5, sample_every=30, checkpoint_every=30, n_samples=16)


def tiny(model: str, **kw) -> GenConfig:
    lr = {"vae": 2e-3, "gan": 1e-3, "ddpm": 2e-3}[model]
    return GenConfig(model=model, **{"lr": lr, **TINY, **kw}).check()


# --- data ------------------------------------------------------------------------------------------------

def test_digits_and_fashion_load_as_scaled_tensors():
    x, y = load_images("digits", size=16)
    assert x.shape == (1437, 1, 16, 16) and x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    held, _ = load_images("digits", size=16, split="test")
    assert len(held) == 1797 - 1437
    f, fy = load_images("fashion", size=28, limit=500)
    assert f.shape == (500, 1, 28, 28) and fy.max() <= 9
    assert f.float().std() > 0.3  # real pictures, not a blank array


def test_image_folder_and_its_errors(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    x, _ = load_images("folder", size=12, channels=3, path=str(tmp_path))
    assert x.shape == (3, 3, 12, 12)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(StudioError, match="cannot read image .*broken.png"):
        load_images("folder", size=12, path=str(tmp_path))
    with pytest.raises(StudioError, match="does not exist"):
        load_images("folder", path=str(tmp_path / "nope"))
    with pytest.raises(StudioError, match="dataset-fashion-mnist"):
        load_images("fashion", path=str(tmp_path))


def test_toys():
    for name in ("gmm", "moons", "rings"):
        pts = load_toy(name, n=500, seed=1)
        assert pts.shape == (500, 2) and pts.abs().max() < 3
    assert torch.equal(load_toy("moons", 100, seed=3), load_toy("moons", 100, seed=3))


# --- models ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["vae", "ddpm"])
def test_loss_falls(model, tmp_path):
    status = train(tiny(model, steps=120 if model == "ddpm" else 60), tmp_path)
    losses = [e["loss"] for e in read_events(tmp_path) if "loss" in e]
    assert status["state"] == "finished"
    assert np.mean(losses[-4:]) < 0.8 * losses[0]


def test_gan_learns_the_data(tmp_path):
    x, _ = load_images("digits", size=16)
    cfg = tiny("gan", steps=150)
    torch.manual_seed(0)
    before = build_module(cfg).sample(256, seed=1)
    train(cfg, tmp_path)
    after = load_generator(tmp_path).sample(256, seed=1)
    gap = lambda s: float((s.mean(0) - x.mean(0)).abs().mean())  # noqa: E731
    assert gap(after) < 0.5 * gap(before)  # the mean generated image moved onto the data's
    ev = [e for e in read_events(tmp_path) if "loss" in e][-1]
    assert {"g_loss", "d_loss"} <= set(ev)


def test_shapes_and_save_load_round_trip(tmp_path):
    from diffusers import DDPMPipeline

    train(tiny("ddpm", steps=20), tmp_path / "ddpm")
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "ddpm" / "pipeline"))  # loads without the studio
    out = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 16, 16, 1)
    gen = load_generator(tmp_path / "ddpm")
    fast = gen.sample(4, seed=0, steps=10, sampler="ddim")
    assert fast.shape == (4, 1, 16, 16) and torch.equal(fast, gen.sample(4, seed=0, steps=10, sampler="ddim"))
    frames = gen.trajectory(4, seed=0, steps=10, sampler="ddim", frames=5)
    assert len(frames) == 5 and frames[0].std() > frames[-1].std() * 0.5
    train(tiny("vae", steps=10), tmp_path / "vae")
    vae = load_generator(tmp_path / "vae")
    x, _ = load_images("digits", size=16, limit=2)
    assert vae.interpolate(x[0], x[1], n=7).shape == (7, 1, 16, 16)
    assert vae.latent_map(5).shape == (25, 1, 16, 16)
    with pytest.raises(StudioError, match="for VAE runs"):
        gen.interpolate(x[0], x[1])


def test_ddpm_samples_and_saves_the_weight_average(tmp_path):
    """The pipeline's UNet is the EMA of the weights (what lets few DDIM steps work), not the raw weights."""
    from diffusers import DDPMPipeline
    from safetensors.torch import load_file

    train(tiny("ddpm", steps=30), tmp_path / "r")
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = load_file(str(next((tmp_path / "r" / "pipeline" / "unet").glob("*.safetensors"))))
    name = next(k for k in saved if k.endswith("conv_in.weight"))
    average, current = ckpt["state_dict"]["net." + name], ckpt["current_model_state"]["net." + name]
    assert torch.equal(saved[name], average) and not torch.equal(saved[name], current)
    DDPMPipeline.from_pretrained(str(tmp_path / "r" / "pipeline"))
    train(tiny("ddpm", steps=5, ema=0), tmp_path / "off")
    assert "current_model_state" not in torch.load(tmp_path / "off" / "checkpoints" / "last.ckpt", weights_only=True)


def test_every_written_image_is_marked_synthetic(tmp_path):
    train(tiny("vae", steps=30), tmp_path)
    pngs = sorted((tmp_path / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["final.png", "step_000030.png"]
    for p in pngs:
        assert Image.open(p).text["synthetic"] == "true"
        assert "not real data" in Image.open(p).text["Description"]
    gif = save_gif([torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)], tmp_path / "t.gif")
    assert b"not real data" in gif.read_bytes()


def test_config_and_seed_written_next_to_outputs(tmp_path):
    train(tiny("vae", steps=10, seed=7), tmp_path)
    from studio.config import load_config

    assert load_config(GenConfig, tmp_path / "config.yaml").seed == 7
    a = load_generator(tmp_path).sample(4, seed=3)
    assert torch.equal(a, load_generator(tmp_path).sample(4, seed=3))


def test_bad_config_is_refused():
    with pytest.raises(StudioError, match="unknown model"):
        GenConfig(model="flow").check()
    with pytest.raises(StudioError, match="multiple of 4"):
        GenConfig(data=GenConfig().data.__class__(size=10)).check()


# --- jobs ------------------------------------------------------------------------------------------------

def background(tmp_path, name, *overrides):
    res = run_studio("generate", "train", "configs/generative/ddpm_digits.yaml", "width=16", "batch_size=16",
                     "log_every=5", "checkpoint_every=10", "sample_every=100000", *overrides,
                     "--run-dir", str(tmp_path / name), "--background", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_step(run_dir, step, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if read_status(run_dir).get("step", 0) >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} never reached step {step}")


def test_cancel_then_resume_continues_from_the_saved_step(tmp_path):
    job = background(tmp_path, "run", "steps=100000")
    run_dir = tmp_path / "run"
    wait_step(run_dir, 30)
    assert run_studio("jobs", "cancel", job["job_id"]).returncode == 0
    jobs = Jobs()
    assert jobs.wait(job["job_id"], 60).state == "cancelled"
    stopped = read_status(run_dir)["step"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved == stopped >= 30
    # resume with a smaller goal: edit the run's config, as a user would
    cfg = (run_dir / "config.yaml").read_text().replace("steps: 100000", f"steps: {stopped + 20}")
    (run_dir / "config.yaml").write_text(cfg)
    assert run_studio("jobs", "resume", job["job_id"]).returncode == 0
    assert jobs.wait(job["job_id"], 120).state == "finished"
    steps = [e["step"] for e in read_events(run_dir)]
    after = steps[steps.index(max(s for s in steps if s <= stopped)) + 1:]
    assert after and stopped < after[0] <= stopped + 5  # the counter went on, not from 0
    assert read_status(run_dir)["step"] == stopped + 20
    assert (run_dir / "pipeline" / "model_index.json").is_file()
    listed = run_studio("jobs", "list", "--json")
    assert any(j["id"] == job["job_id"] and j["state"] == "finished" for j in json.loads(listed.stdout))


def test_a_killed_job_is_marked_failed(tmp_path):
    job = background(tmp_path, "killed", "steps=100000")
    wait_step(tmp_path / "killed", 5)
    jobs = Jobs()
    os.kill(jobs.get(job["job_id"]).pid, signal.SIGKILL)
    done = jobs.wait(job["job_id"], 30)
    assert done.state == "failed" and "killed or crashed" in done.error
    shown = json.loads(run_studio("jobs", "show", job["job_id"], "--json").stdout)
    assert shown["state"] == "failed"


def test_jobs_queue_beyond_the_limit(tmp_path):
    first = background(tmp_path, "q1", "steps=40")
    second = background(tmp_path, "q2", "steps=40")
    assert first["status"] == "running" and second["status"] == "queued"  # STUDIO_MAX_JOBS defaults to 1
    jobs = Jobs()
    assert jobs.wait(second["job_id"], 120).state == "finished"
    assert jobs.get(first["job_id"]).state == "finished"
    assert read_status(tmp_path / "q2")["step"] == 40


def test_cli_sample_and_bad_run(tmp_path):
    train(tiny("ddpm", steps=10), tmp_path / "d")
    out = run_studio("generate", "sample", str(tmp_path / "d"), "--n", "9", "--out", str(tmp_path / "g.png"),
                     "--sampler", "ddim", "--steps", "8", "--trajectory", str(tmp_path / "t.gif"))
    assert out.returncode == 0, out.stderr
    assert "9 samples from ddpm (ddim, 8 steps)" in out.stdout
    assert Image.open(tmp_path / "g.png").text["synthetic"] == "true" and (tmp_path / "t.gif").stat().st_size > 0
    bad = run_studio("generate", "sample", str(tmp_path), "--n", "4", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "not a generator run folder" in bad.stderr and "Traceback" not in bad.stderr


def test_classifier_metrics_rank_real_above_noise_and_catch_copies(tmp_path):
    from generative.metrics import Judge

    judge = Judge("digits", 16)
    held, _ = load_images("digits", 16, split="test")
    train_x, _ = load_images("digits", 16)
    mu, sd = train_x.mean(0), train_x.std(0)
    noise = (mu + sd * torch.randn(300, *mu.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    real, fake = judge.score(held[:300]), judge.score(noise)
    assert real["fd"] < 0.1 * fake["fd"] and real["confidence"] > fake["confidence"]
    assert judge.score(train_x[:300])["nn_ratio"] == 0.0  # copies of training images: memorization
    assert fake["nn_ratio"] > 1.5


def test_training_logs_metrics(tmp_path):
    from generative.train import read_metrics

    train(tiny("vae", steps=70), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [30, 60, 70]  # at each sample grid and at the end
    assert all({"fd", "confidence", "nn_ratio"} <= set(r) for r in rows)


@pytest.mark.parametrize("model", ["vae", "gan", "ddpm"])
def test_toy_models_learn_the_moons(model, tmp_path):
    from generative.data import load_toy
    from generative.metrics import mmd
    from generative.train import DataConfig, read_metrics

    cfg = GenConfig(model=model, data=DataConfig(name="moons"), steps=400, lr=1e-3, batch_size=256,
                    sample_every=400, checkpoint_every=400, log_every=20)
    untrained = build_module(cfg).sample(1000, seed=1)
    train(cfg, tmp_path)
    gen = load_generator(tmp_path)  # model/ folder (+ the diffusers scheduler for DDPM)
    after = gen.sample(1000, seed=1, steps=100, sampler="ddim")
    real = load_toy("moons", 1000, seed=7)
    assert after.shape == (1000, 2)
    assert mmd(after, real) < 0.5 * mmd(untrained, real)
    assert read_metrics(tmp_path)[-1]["mmd"] < 0.1
    assert Image.open(tmp_path / "samples" / "final.png").text["synthetic"] == "true"


def test_job_limit_comes_from_the_studio_config(tmp_path, monkeypatch):
    cfg = tmp_path / "studio.yaml"
    cfg.write_text("jobs:\n  max_running: 3\n")
    monkeypatch.delenv("STUDIO_MAX_JOBS", raising=False)
    monkeypatch.setenv("STUDIO_CONFIG", str(cfg))
    assert Jobs(tmp_path / "j.sqlite").max_running == 3
    monkeypatch.setenv("STUDIO_MAX_JOBS", "2")
    assert Jobs(tmp_path / "j.sqlite").max_running == 2


# --- Lightning: cancel and resume, early stopping, conditional generation, hardware -------------------------

def _cancel_at(step: int):
    """A progress hook that sends this process SIGTERM (what `studio jobs cancel` sends) at ``step``."""
    def progress(s, total, losses):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return progress


@pytest.mark.parametrize("model", ["vae", "gan", "ddpm"])
def test_cancel_then_resume_equals_an_uninterrupted_run(model, tmp_path):
    """Same step count, same batches and noise after the resume: the final weights are identical."""
    kw = dict(steps=24, batch_size=16, width=8, log_every=5, sample_every=1000, checkpoint_every=7, metrics=False)
    train(tiny(model, **kw), tmp_path / "whole")
    stopped = train(tiny(model, **kw), tmp_path / "cut", progress=_cancel_at(10))
    assert stopped["state"] == "cancelled" and stopped["step"] == 10
    done = train(None, tmp_path / "cut", resume=True)
    assert done["state"] == "finished" and done["step"] == 24
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    for key in ("state_dict", "current_model_state"):  # DDPM: the weight average and the weights
        assert set(a.get(key, {})) == set(b.get(key, {}))
        assert all(torch.equal(a[key][k], b[key][k]) for k in a.get(key, {}))
    steps = [e["step"] for e in read_events(tmp_path / "cut") if "loss" in e]
    assert steps == [1, 5, 10, 15, 20]  # the counter went on from 10, not from 0
    a_params = load_generator(tmp_path / "whole").sample(4, seed=2, steps=3, sampler="ddim")
    assert torch.equal(a_params, load_generator(tmp_path / "cut").sample(4, seed=2, steps=3, sampler="ddim"))


def test_early_stopping_stops_and_marks_the_curve(tmp_path):
    from studio.ui.generate_tab import loss_plot

    cfg = tiny("vae", steps=500, lr=0.0, sample_every=5, early_stop_patience=2, metrics=False)
    status = train(cfg, tmp_path)  # lr 0: the validation loss never improves after the first check
    assert status["state"] == "finished" and status["early_stopped"] == 15 and status["step"] == 15
    events = read_events(tmp_path)
    assert [e["step"] for e in events if "val_loss" in e] == [5, 10, 15]
    assert any(e.get("early_stop") and e["step"] == 15 for e in events)
    fig = loss_plot(events, "vae")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("early stop") for label in labels) and "val_loss" in labels
    with pytest.raises(StudioError, match="early stopping is not offered for GANs"):
        tiny("gan", early_stop_patience=3)


def test_a_conditional_vae_draws_the_class_asked_for(tmp_path):
    from generative.metrics import Judge

    cfg = tiny("vae", steps=600, batch_size=64, width=32, conditional=True, sample_every=600, metrics=False)
    train(cfg, tmp_path)
    gen = load_generator(tmp_path)
    judge = Judge("digits", 16)
    for label in (1, 7):
        images = gen.sample(50, seed=3, label=label)
        assert judge.score(images, torch.full((50,), label))["class_accuracy"] >= 0.7
    grid = gen.class_grid(per_class=3, seed=0)
    assert judge.score(grid, torch.arange(10).repeat_interleave(3))["class_accuracy"] >= 0.7
    with pytest.raises(StudioError, match="class is a number from 0 to 9|the class"):
        gen.sample(4, label=10)
    with pytest.raises(StudioError, match="guidance is for class-conditional DDPM"):
        gen.sample(4, label=1, guidance=3)


def test_a_conditional_ddpm_samples_by_class_with_guidance(tmp_path):
    cfg = tiny("ddpm", steps=20, batch_size=16, width=8, conditional=True, sample_every=20, metrics=False)
    train(cfg, tmp_path)
    gen = load_generator(tmp_path)
    assert gen.module.net.config.num_class_embeds == 11  # ten classes and "no class"
    a = gen.sample(4, seed=0, steps=5, sampler="ddim", label=3)
    assert not torch.equal(a, gen.sample(4, seed=0, steps=5, sampler="ddim", label=8))  # the label is read
    assert not torch.equal(a, gen.sample(4, seed=0, steps=5, sampler="ddim", label=3, guidance=3))
    assert torch.equal(a, gen.sample(4, seed=0, steps=5, sampler="ddim", label=3))
    out = run_studio("generate", "sample", str(tmp_path), "--n", "20", "--out", str(tmp_path / "g.png"),
                     "--sampler", "ddim", "--steps", "5", "--guidance", "3")
    assert out.returncode == 0, out.stderr
    assert "20 samples from ddpm, 2 per class, one row per class, guidance 3" in out.stdout
    one = run_studio("generate", "sample", str(tmp_path), "--n", "4", "--label", "7", "--guidance", "3",
                     "--out", str(tmp_path / "s.png"), "--sampler", "ddim", "--steps", "5")
    assert one.returncode == 0 and "of class 7 (7)" in one.stdout
    bad = run_studio("generate", "sample", str(tmp_path), "--n", "4", "--label", "12",
                     "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "the class" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(StudioError, match="labelled dataset"):
        tiny("ddpm", conditional=True, data=GenConfig().data.__class__(name="moons"))


def test_hardware_options_use_a_gpu_when_there_is_one():
    from generative.train import trainer_options

    cfg = tiny("ddpm")
    assert trainer_options(cfg, cuda=False, bf16=False) == {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    assert trainer_options(cfg, cuda=True, bf16=True)["precision"] == "bf16-mixed"
    assert trainer_options(cfg, cuda=True, bf16=False) == {"accelerator": "gpu", "devices": 1, "precision": "32-true"}
    assert trainer_options(tiny("ddpm", devices=2, strategy="ddp"), cuda=False, bf16=False)["strategy"] == "ddp"
    nodes = trainer_options(tiny("ddpm", devices=8, num_nodes=2), cuda=True, bf16=True)
    assert (nodes["num_nodes"], nodes["devices"], nodes["strategy"]) == (2, 8, "ddp")
    with pytest.raises(StudioError, match="no GPU"):
        trainer_options(tiny("ddpm", accelerator="gpu"), cuda=False, bf16=False)


def test_a_run_of_the_earlier_loop_samples_and_refuses_resume_clearly(tmp_path):
    """Run folders written before Lightning (checkpoint.pt with the modules' weights) still sample."""
    from generative.models import ConvVAE
    from studio.config import save_config

    cfg = tiny("vae")
    save_config(cfg, tmp_path / "config.yaml")
    net = ConvVAE(1, 16, cfg.z_dim, cfg.width)
    torch.save({"step": 3, "modules": {"model": net.state_dict()}}, tmp_path / "checkpoint.pt")
    gen = load_generator(tmp_path)
    z = torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen.sample(2, seed=0), net.eval().decode(z))
    with pytest.raises(StudioError, match="earlier training loop.*Start a new run"):
        train(None, tmp_path, resume=True)


def test_two_ddp_processes_write_once_stop_together_and_resume(tmp_path):
    """devices=2 strategy=ddp on CPU (gloo): rank 0 alone writes; a cancel stops both at the same step."""
    import psutil

    run_dir = tmp_path / "ddp"
    res = run_studio("generate", "train", "configs/generative/vae_digits.yaml", "devices=2", "strategy=ddp",
                     "accelerator=cpu", "steps=100000", "log_every=5", "checkpoint_every=50", "sample_every=100000",
                     "metrics=false", "--run-dir", str(run_dir), "--background", "--json")
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    wait_step(run_dir, 20, timeout=180)
    jobs = Jobs()
    parent = psutil.Process(jobs.get(job["job_id"]).pid)
    workers = [p for p in parent.children(recursive=True) if "generate" in " ".join(p.cmdline())]
    assert len(workers) == 1  # the second process Lightning's launcher started
    assert run_studio("jobs", "cancel", job["job_id"]).returncode == 0
    assert jobs.wait(job["job_id"], 90).state == "cancelled"
    psutil.wait_procs(workers, timeout=30)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    stopped = read_status(run_dir)["step"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stopped
    cfg = (run_dir / "config.yaml").read_text().replace("steps: 100000", f"steps: {stopped + 10}")
    (run_dir / "config.yaml").write_text(cfg)
    assert run_studio("jobs", "resume", job["job_id"]).returncode == 0
    assert jobs.wait(job["job_id"], 180).state == "finished"
    steps = [e["step"] for e in read_events(run_dir) if "loss" in e]
    assert steps == sorted(set(steps)) and steps[-1] > stopped  # each step logged once, by one process
    assert read_status(run_dir)["step"] == stopped + 10
    assert (run_dir / "model" / "model.safetensors").is_file()
    listed = json.loads(run_studio("jobs", "list", "--json").stdout)
    assert len([j for j in listed if j["run_dir"] == str(run_dir)]) == 1


def test_a_job_whose_process_is_being_started_is_not_taken_for_dead(tmp_path):
    # pump() marks a job running, then starts its process and records the PID; a refresh from another
    # page's timer in between once marked a healthy job failed ("killed or crashed") while it trained on
    jobs = Jobs(db=tmp_path / "jobs.sqlite")
    starting = jobs.register("generate", ["generate", "train", "x.yaml"], tmp_path / "starting", state="running")
    jobs._set(starting.id, started=time.time(), pid=None)
    stale = jobs.register("generate", ["generate", "train", "x.yaml"], tmp_path / "stale", state="running")
    jobs._set(stale.id, started=time.time() - 2 * SPAWN_GRACE_S, pid=None)
    jobs.refresh()
    assert jobs.get(starting.id).state == "running"
    assert jobs.get(stale.id).state == "failed" and "killed or crashed" in jobs.get(stale.id).error
