"""The generators: a convolutional VAE, a DCGAN, and a DDPM on diffusers' UNet2DModel.

VAE (Kingma & Welling): q(z|x) = N(mu(x), diag sigma^2(x)); z = mu + sigma * eps (the
reparameterization), eps ~ N(0, I). Per image the loss is the negative ELBO
    L = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)),
    KL = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2),
with a Bernoulli decoder on pixels in [0, 1] (binary cross-entropy, summed over pixels).

DCGAN (Radford et al.): transposed-conv generator and conv discriminator with batch norm,
LeakyReLU(0.2) in D, Adam(lr 2e-4, beta1 0.5), and one-sided label smoothing (real = 0.9).

DDPM (Ho et al.): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; the UNet learns eps from (x_t, t)
with loss ||eps - eps_theta(x_t, t)||^2. Sampled with DDPMScheduler (all T steps) or
DDIMScheduler (fewer, deterministic steps); saved as a diffusers DDPMPipeline folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from studio.errors import StudioError


class ConvVAE(nn.Module):
    """Encoder q(z|x[, y]) and Bernoulli decoder p(x|z[, y]); with ``num_classes`` both also read the
    class as a one-hot vector (a class-conditional VAE, Sohn et al. 2015)."""

    def __init__(self, channels: int = 1, size: int = 16, z_dim: int = 16, width: int = 32, num_classes: int = 0):
        super().__init__()
        if size % 4:
            raise StudioError(f"image size must be a multiple of 4, got {size}")
        self.channels, self.size, self.z_dim, self.width = channels, size, z_dim, width
        self.num_classes = num_classes
        s = size // 4
        self.enc = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU(),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.mu = nn.Linear(2 * width * s * s + num_classes, z_dim)
        self.logvar = nn.Linear(2 * width * s * s + num_classes, z_dim)
        self.dec_in = nn.Linear(z_dim + num_classes, 2 * width * s * s)
        self.dec = nn.Sequential(nn.ReLU(), nn.Unflatten(1, (2 * width, s, s)),
                                 nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(width, channels, 4, 2, 1))

    def _with_label(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.num_classes:
            return h
        if y is None:
            raise StudioError("this VAE is class-conditional: give the class of each sample")
        return torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], 1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._with_label(self.enc(x), y)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.dec(self.dec_in(self._with_label(z, y)))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1]."""
        return torch.sigmoid(self.decode_logits(z, y)) * 2 - 1

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image: binary cross-entropy on pixels in [0, 1], summed over pixels."""
        return F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="sum") / len(x)

    def config(self) -> dict:
        return {"kind": "vae", "channels": self.channels, "size": self.size, "z_dim": self.z_dim, "width": self.width,
                **({"num_classes": self.num_classes} if self.num_classes else {})}


class Generator(nn.Module):
    def __init__(self, channels: int = 1, size: int = 16, z_dim: int = 32, width: int = 64):
        super().__init__()
        self.channels, self.size, self.z_dim, self.width = channels, size, z_dim, width
        s = size // 4
        self.net = nn.Sequential(
            nn.Linear(z_dim, 2 * width * s * s), nn.Unflatten(1, (2 * width, s, s)), nn.BatchNorm2d(2 * width),
            nn.ReLU(), nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def config(self) -> dict:
        return {"kind": "gan", "channels": self.channels, "size": self.size, "z_dim": self.z_dim, "width": self.width}


class Discriminator(nn.Module):
    def __init__(self, channels: int = 1, size: int = 16, width: int = 64):
        super().__init__()
        s = size // 4
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * s * s, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


def make_unet(channels: int, size: int, width: int = 32, num_classes: int = 0):
    """diffusers' UNet2DModel; with ``num_classes`` it also embeds a class label, and label
    ``num_classes`` means "no class" (what classifier-free guidance trains and samples with)."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(width, 2 * width, 2 * width),
                       down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       num_class_embeds=num_classes + 1 if num_classes else None)


def save_torch_model(model: nn.Module, folder: Path) -> None:
    """A plain PyTorch model folder: config.json + model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config(), indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def load_torch_model(folder: Path) -> nn.Module:
    """A model saved by :func:`save_torch_model`: ``config.json`` (checked) + ``model.safetensors``."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    kind = cfg.pop("kind", None)
    if kind not in _KINDS or not all(isinstance(v, int) and 0 < v <= 4096 for v in cfg.values()):
        raise StudioError(f"{folder.name}/config.json does not describe a studio model; train the run again")
    model = _KINDS[kind](**cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint written by ``torch.save``, read with ``weights_only=True``.

    Only tensors, numbers, strings and containers of them are rebuilt, so a checkpoint.pt planted in
    a shared run folder cannot run code when it is sampled from or resumed; such a file is refused
    with a StudioError instead.
    """
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ValueError) as exc:
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc).lower():
            raise StudioError(f"{path.name} holds objects other than tensors and numbers, so it was not loaded "
                              "(it may not come from this studio); train the run again") from None
        raise StudioError(f"{path.name} cannot be read ({type(exc).__name__}); it may be damaged") from None


# --- 2-D toys: the same three models on points instead of images -------------------------------------------
def _mlp(sizes: list[int], act=nn.SiLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])


class MLPVAE(nn.Module):
    """VAE on points: Gaussian decoder with fixed sigma, so recon = ||x - x_hat||^2 / (2 sigma^2)."""

    sigma = 0.1

    def __init__(self, dim: int = 2, z_dim: int = 2, width: int = 128):
        super().__init__()
        self.dim, self.z_dim, self.width = dim, z_dim, width
        self.enc = _mlp([dim, width, width])
        self.act = nn.SiLU()
        self.mu, self.logvar = nn.Linear(width, z_dim), nn.Linear(width, z_dim)
        self.dec = _mlp([z_dim, width, width, dim])

    def encode(self, x, y=None):
        h = self.act(self.enc(x))
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode_logits(self, z, y=None):
        return self.dec(z)

    def decode(self, z, y=None):
        return self.dec(z)

    def nll(self, out, x):
        """-log p(x|z) up to a constant: ||x - x_hat||^2 / (2 sigma^2), averaged over points."""
        return ((out - x) ** 2).sum(1).mean() / (2 * self.sigma ** 2)

    def config(self) -> dict:
        return {"kind": "vae_mlp", "dim": self.dim, "z_dim": self.z_dim, "width": self.width}


class MLPGenerator(nn.Module):
    def __init__(self, dim: int = 2, z_dim: int = 8, width: int = 128):
        super().__init__()
        self.dim, self.z_dim, self.width = dim, z_dim, width
        self.net = _mlp([z_dim, width, width, dim], act=lambda: nn.LeakyReLU(0.2))

    def forward(self, z):
        return self.net(z)

    def config(self) -> dict:
        return {"kind": "gan_mlp", "dim": self.dim, "z_dim": self.z_dim, "width": self.width}


class MLPDiscriminator(nn.Module):
    def __init__(self, dim: int = 2, width: int = 128):
        super().__init__()
        self.net = _mlp([dim, width, width, 1], act=lambda: nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.net(x)[:, 0]


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t) for points: an MLP on x_t and a sinusoidal embedding of t."""

    def __init__(self, dim: int = 2, width: int = 128, t_dim: int = 32):
        super().__init__()
        self.dim, self.width, self.t_dim = dim, width, t_dim
        self.net = _mlp([dim + t_dim, width, width, width, dim])

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(len(x))
        freqs = torch.exp(-torch.arange(self.t_dim // 2) * (9.2 / (self.t_dim // 2)))
        ang = t[:, None] * freqs[None]
        return self.net(torch.cat([x, torch.sin(ang), torch.cos(ang)], 1))

    def config(self) -> dict:
        return {"kind": "ddpm_mlp", "dim": self.dim, "width": self.width, "t_dim": self.t_dim}


_KINDS = {"vae": ConvVAE, "gan": Generator, "vae_mlp": MLPVAE, "gan_mlp": MLPGenerator, "ddpm_mlp": MLPDenoiser}
