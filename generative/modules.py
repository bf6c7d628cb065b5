"""The generators as LightningModules: :class:`VAE`, :class:`DCGAN` and :class:`DDPM`.

Each owns its loss, ``training_step`` / ``validation_step`` / ``configure_optimizers`` and ``sample()``;
``L.Trainer`` runs them (``generative/train.py``), so the same module trains on a CPU, a GPU or under
DDP by changing Trainer arguments only. The 2-D toys are the same classes with an MLP backbone
(``generative/models.py`` holds the networks). With ``conditional: true`` (digits, Fashion-MNIST)
the VAE and DDPM learn p(x | class): the VAE reads the class as a one-hot vector, the DDPM as a
label embedding trained with classifier-free guidance (``generative/diffusion.py``).

Every random draw of a training step (batch noise, timesteps, latent codes, dropped labels) comes
from a generator seeded by (seed, global step, rank): a resumed run continues exactly as one that
never stopped, and each DDP process draws its own noise.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from generative.data import TOYS
from generative.diffusion import denoise, guided
from generative.models import (
    MLPVAE,
    ConvVAE,
    Discriminator,
    Generator,
    MLPDenoiser,
    MLPDiscriminator,
    MLPGenerator,
    make_unet,
    save_torch_model,
)
from studio.errors import StudioError
from studio.limits import check_int

NUM_CLASSES = 10  # digits and Fashion-MNIST


class GenModule(L.LightningModule):
    """What the three generators share: the config, the seeded per-step randomness, class labels."""

    kind = ""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.toy = cfg.data.name in TOYS
        self.num_classes = NUM_CLASSES if cfg.conditional else 0

    # --- randomness and labels --------------------------------------------------------------------------
    def generator(self, *keys: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        seed = self.cfg.seed
        for k in keys:
            seed = (seed * 1_000_003 + k + 1) % (2 ** 63)
        return g.manual_seed(seed)

    def step_generator(self) -> torch.Generator:
        """The randomness of the current training step on this process."""
        return self.generator(self.global_step, self.global_rank)

    def randn(self, *shape: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=self.device)

    def labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return y if self.num_classes else None

    def check_labels(self, n: int, labels) -> torch.Tensor | None:
        """``labels`` (one class for all, or one per sample) as a tensor; None for an unconditional model.
        The one label rule: the CLI, the tab and the library all come through here."""
        if not self.num_classes:
            if labels is not None:
                raise StudioError("this run is not class-conditional; train it with conditional=true to pick a class")
            return None
        if labels is None:
            return torch.arange(n, device=self.device) % self.num_classes
        if not isinstance(labels, torch.Tensor):
            labels = [check_int("the class", v, 0, self.num_classes - 1)
                      for v in (labels if isinstance(labels, (list, tuple)) else [labels])]
        y = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        y = y.expand(n) if len(y) == 1 else y
        if len(y) != n or int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise StudioError(f"the class must be a number from 0 to {self.num_classes - 1}, one for all samples "
                              f"or one per sample ({n})")
        return y

    # --- the Lightning hooks they share -----------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.loss(x, self.labels(y), self.step_generator())
        self.log_train(out["loss"])
        return out

    def log_train(self, loss: torch.Tensor) -> None:
        """``train_loss`` for Lightning's loggers, only at the steps they write (``log_every``): each
        ``self.log`` call costs about 1 ms here, a fifth of a VAE step."""
        if (self.global_step + 1) % self.cfg.log_every == 0:
            self.log("train_loss", loss.detach())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.loss(x, self.labels(y), self.generator(10 ** 9, batch_idx))  # the same draws at every check
        self.log("val_loss", out["loss"], sync_dist=True, batch_size=len(x))
        return out

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)

    def sample(self, n: int, seed: int = 0, labels=None, guidance: float = 0.0, steps: int | None = None,
               sampler: str = "ddim") -> torch.Tensor:
        """n samples in [-1, 1] (points for a toy); ``labels``: a class for all or one per sample."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._sample(n, seed, self.check_labels(n, labels), guidance, steps, sampler)
        finally:
            self.train(was)

    def save_final(self, run_dir) -> None:
        save_torch_model(self.net, run_dir / "model")


class VAE(GenModule):
    """Negative ELBO: -log p(x|z) + beta * KL(q(z|x) || N(0, I)), z = mu + sigma * eps (see models.py)."""

    kind = "vae"

    def __init__(self, cfg):
        super().__init__(cfg)
        d = cfg.data
        self.net = MLPVAE(2, 2, 4 * cfg.width) if self.toy else ConvVAE(d.channels, d.size, cfg.z_dim, cfg.width,
                                                                         self.num_classes)

    def loss(self, x, y, g):
        mu, logvar = self.net.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * self.randn(*mu.shape, g=g)
        recon = self.net.nll(self.net.decode_logits(z, y), x)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        return {"loss": recon + self.cfg.beta * kl, "recon": recon, "kl": kl}

    def _sample(self, n, seed, labels, guidance, steps, sampler):
        if guidance:
            raise StudioError("guidance is for conditional DDPM runs; a conditional VAE samples its class directly")
        g = torch.Generator(device=self.device).manual_seed(seed)
        return self.net.decode(self.randn(n, self.net.z_dim, g=g), labels)


class DCGAN(GenModule):
    """Discriminator step on real (label 0.9, one-sided smoothing) and generated images, then a generator
    step; Adam(lr, betas (0.5, 0.999)). Manual optimization: two optimizers per batch.

    The discriminator's step calls the torch optimizer itself, so Lightning's step counter (which
    counts optimizer steps) counts batches, as for the other models. ``val_loss`` is the
    discriminator's loss on held-out images: it says how well D tells real from generated, not how
    good the samples are, so early stopping is not offered for GANs."""

    kind = "gan"

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.toy:
            self.net, self.disc = MLPGenerator(2, cfg.z_dim, 4 * cfg.width), MLPDiscriminator(2, 4 * cfg.width)
        else:
            d = cfg.data
            self.net = Generator(d.channels, d.size, cfg.z_dim, 2 * cfg.width)
            self.disc = Discriminator(d.channels, d.size, 2 * cfg.width)
        self.automatic_optimization = False

    def loss(self, x, y, g):
        fake = self.net(self.randn(len(x), self.net.z_dim, g=g))
        d = self.d_loss(x, fake.detach())
        return {"loss": d, "d_loss": d, "fake": fake}

    def d_loss(self, real, fake):
        bce = F.binary_cross_entropy_with_logits
        return bce(self.disc(real), torch.full((len(real),), 0.9, device=self.device)) + bce(
            self.disc(fake), torch.zeros(len(fake), device=self.device))

    def training_step(self, batch, batch_idx):
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        out = self.loss(x, None, self.step_generator())
        opt_d.zero_grad()
        self.manual_backward(out["d_loss"])
        opt_d.optimizer.step()
        g_loss = F.binary_cross_entropy_with_logits(self.disc(out["fake"]), torch.ones(len(x), device=self.device))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        d = out["d_loss"].detach()
        self.log_train(g_loss.detach() + d)
        return {"loss": g_loss.detach() + d, "g_loss": g_loss.detach(), "d_loss": d}

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return [torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, betas=betas),
                torch.optim.Adam(self.disc.parameters(), lr=self.cfg.lr, betas=betas)]

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        out = self.loss(x, None, self.generator(10 ** 9, batch_idx))
        self.log("val_loss", out["d_loss"], sync_dist=True, batch_size=len(x))

    def _sample(self, n, seed, labels, guidance, steps, sampler):
        if guidance:
            raise StudioError("guidance is for conditional DDPM runs")
        g = torch.Generator(device=self.device).manual_seed(seed)
        return self.net(self.randn(n, self.net.z_dim, g=g))


class DDPM(GenModule):
    """||eps - eps_theta(x_t, t[, y])||^2 with x_t from diffusers' DDPMScheduler.add_noise; AdamW. With a
    class, the label is replaced by "no class" with probability ``p_uncond`` (classifier-free guidance)."""

    kind = "ddpm"

    def __init__(self, cfg):
        from diffusers import DDPMScheduler

        super().__init__(cfg)
        d = cfg.data
        self.net = MLPDenoiser(2, 4 * cfg.width) if self.toy else make_unet(d.channels, d.size, cfg.width,
                                                                            self.num_classes)
        self.scheduler = DDPMScheduler(num_train_timesteps=cfg.timesteps)

    def eps(self, x, t, y=None):
        if self.toy:
            return self.net(x, t)
        return self.net(x, t, class_labels=y).sample

    def loss(self, x, y, g):
        noise = self.randn(*x.shape, g=g)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x),), generator=g, device=self.device)
        if y is not None:
            drop = torch.rand(len(x), generator=g, device=self.device) < self.cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        noisy = self.scheduler.add_noise(x, noise, t)
        return {"loss": F.mse_loss(self.eps(noisy, t, y), noise)}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr)

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, 2) if self.toy else (n, self.net.config.in_channels, self.net.config.sample_size,
                                        self.net.config.sample_size)

    def _sample(self, n, seed, labels, guidance, steps, sampler, keep: int = 0):
        if guidance and labels is None:
            raise StudioError("guidance is for class-conditional runs (conditional=true)")
        eps = guided(self.eps, labels, self.num_classes, guidance)
        return denoise(eps, self.shape(n), self.scheduler, seed, steps, sampler, keep=keep, clamp=not self.toy)

    def sample(self, n, seed=0, labels=None, guidance=0.0, steps=None, sampler="ddim"):
        return super().sample(n, seed, labels, guidance, steps, sampler)[0]

    def trajectory(self, n, seed=0, labels=None, guidance=0.0, steps=None, sampler="ddpm", frames=10):
        self.eval()
        with torch.no_grad():
            return self._sample(n, seed, self.check_labels(n, labels), guidance, steps, sampler, keep=frames)[1]

    def save_final(self, run_dir) -> None:
        if self.toy:  # an MLP in safetensors; the noise schedule in diffusers' scheduler format
            save_torch_model(self.net, run_dir / "model")
            self.scheduler.save_pretrained(str(run_dir / "model" / "scheduler"))
            return
        from diffusers import DDPMPipeline

        DDPMPipeline(unet=self.net, scheduler=self.scheduler).save_pretrained(str(run_dir / "pipeline"))


MODULES = {"vae": VAE, "gan": DCGAN, "ddpm": DDPM}


def build_module(cfg) -> GenModule:
    return MODULES[cfg.model](cfg)
