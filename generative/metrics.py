"""Sample quality without Inception: a small classifier trained once per dataset and image size.

- ``fd``: the Frechet distance between Gaussians fitted to the classifier's 64-d features of
  generated and real (training) images, ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)). It is FID's
  formula on a small digit/fashion classifier's features, NOT Inception FID: compare numbers only
  with each other, on the same dataset and size.
- ``confidence``: the classifier's mean top-class probability on generated images.
- ``class_accuracy`` (conditional runs): the share of samples the classifier assigns to the class
  they were asked to show.
- ``nn_ratio``: median distance of each generated image to its nearest training image, divided by
  the same for held-out real images. Far below 1 means the generator copies training images.

The classifier is cached under ``$STUDIO_HOME/cache/classifiers/``. For 2-D toys: ``mmd``, the
squared maximum mean discrepancy between 1,000 samples and 1,000 fresh points (RBF kernel).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from generative.data import load_images
from studio.env import home_dir


class SmallClassifier(nn.Module):
    def __init__(self, channels: int, size: int):
        super().__init__()
        s = size // 4
        self.features = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(32 * s * s, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x))


def classifier(dataset: str, size: int, channels: int = 1, path: str | None = None) -> SmallClassifier:
    cache = home_dir("cache", "classifiers") / f"{dataset}_{size}_{channels}.pt"
    model = SmallClassifier(channels, size)
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    x, y = load_images(dataset, size, channels, path, limit=12000)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.enable_grad():  # also when first asked for inside a validation loop
        _fit(model, opt, x, y, g)
    torch.save(model.state_dict(), cache)
    return model.eval()


def _fit(model, opt, x, y, g) -> None:
    for _ in range(4 if len(x) < 5000 else 2):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = (covmean[0] if isinstance(covmean, tuple) else covmean).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


class Judge:
    """Scores generated images against a dataset: ``Judge("digits", 16).score(images)``.

    The reference is the training images (up to 5,000), so held-out real images get a real,
    non-zero distance to compare with (what a perfect generator would reach)."""

    def __init__(self, dataset: str, size: int, channels: int = 1, path: str | None = None, n_real: int = 1000):
        self.model = classifier(dataset, size, channels, path)
        train, _ = load_images(dataset, size, channels, path, limit=5000)
        held, _ = load_images(dataset, size, channels, path, split="test", limit=n_real)
        self.train = train.flatten(1)
        self.real_feats = self.feats(train)
        self.held = held
        self.real_nn = float(torch.cdist(held.flatten(1), self.train).min(1).values.median())

    @torch.no_grad()
    def feats(self, x: torch.Tensor) -> np.ndarray:
        return self.model.features(x).numpy().astype(np.float64)

    @torch.no_grad()
    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """fd, confidence, nn_ratio; with the classes the images were asked to show, also
        ``class_accuracy``: the share the classifier assigns to the class asked for."""
        f = self.feats(images)
        probs = torch.softmax(self.model.head(torch.from_numpy(f).float()), 1)
        nn_dist = float(torch.cdist(images.flatten(1), self.train).min(1).values.median())
        out = {"fd": round(frechet(f, self.real_feats), 4), "confidence": round(float(probs.max(1).values.mean()), 4),
               "nn_ratio": round(nn_dist / self.real_nn, 4)}
        if labels is not None:
            out["class_accuracy"] = round(float((probs.argmax(1) == labels.cpu()).float().mean()), 4)
        return out


def mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (median-distance bandwidth), for point clouds."""
    x = torch.cat([a, b])
    d2 = torch.cdist(x, x) ** 2
    h = d2[d2 > 0].median()
    k = torch.exp(-d2 / h)
    n = len(a)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
