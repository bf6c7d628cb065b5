"""Where server-side paths may point, and names that become folders.

Paths typed or sent through the web UI (a fine-tune data file, an image folder, a model path, a
suite's documents) are resolved with :class:`Roots`: the real path (symlinks followed, ``..``
collapsed) must lie inside one of the allowed roots, which are the upload folder, the studio's
data folders under STUDIO_HOME (runs, eval reports, models; not its databases or its key), the
repository's ``configs/`` and the folders the operator lists in ``security.allowed_roots``.
The refusal is the same sentence whether or not the path exists, so the API cannot be used to
probe the server's file system.

>>> roots = Roots.for_server(["/srv/corpora"])
>>> roots.resolve("/srv/corpora/manuals")          # a Path inside a root
>>> roots.resolve("/etc/passwd")                   # StudioError: outside the allowed folders

Names that become folder names (runs, suites) go through :func:`check_name` or :func:`slug`, and
:func:`inside_home` makes sure a run folder's resolved path stays under STUDIO_HOME.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from studio.env import home_dir, studio_home
from studio.errors import StudioError


def _configs_dir() -> Path:
    """The studio's ``configs/``: the checkout's when running from one, else the copy a wheel installs
    under ``<prefix>/share/genai-studio/configs``."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    installed = Path(sys.prefix) / "share" / "genai-studio" / "configs"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


CONFIGS = _configs_dir()
MAX_PATH = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def uploads_dir() -> Path:
    """The folder the web UI keeps uploads in: ``$GRADIO_TEMP_DIR`` when the operator set it, else
    ``STUDIO_HOME/uploads`` (the app points Gradio there)."""
    chosen = os.environ.get("GRADIO_TEMP_DIR")
    return Path(chosen) if chosen else home_dir("uploads")


# the studio's own data under STUDIO_HOME that users may point at; not its databases, keys or locks
DATA_FOLDERS = ("uploads", "runs", "eval", "models")


class Roots:
    """The folders server-side paths must resolve into."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]

    @classmethod
    def for_server(cls, extra: Iterable[str | Path] = ()) -> Roots:
        """Uploads, the studio's data folders (runs, eval reports, models), configs/ and the operator's
        ``security.allowed_roots``. STUDIO_HOME's databases, key and locks are not among them."""
        return cls([uploads_dir(), *(home_dir(name) for name in DATA_FOLDERS), CONFIGS, *extra])

    def allows(self, path: str | Path) -> bool:
        real = Path(os.path.realpath(path))
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def resolve(self, raw: str | Path, what: str = "path") -> Path:
        """The real path of ``raw`` if it lies inside a root; else one StudioError, whether it exists or not.

        Relative paths are taken from the server's working folder (presets name
        ``configs/finetune/data/...`` that way).
        """
        text = str(raw).strip() if raw is not None else ""
        if not text:
            raise StudioError(f"the {what} is empty")
        if "\x00" in text or len(text) > MAX_PATH:
            raise StudioError(f"the {what} is not a usable path")
        path = Path(text).expanduser()
        if not self.allows(path):
            raise StudioError(f"the {what} {_shown(text)} is outside the folders this studio may read (uploads, "
                              "its runs, eval reports and models, configs/ and security.allowed_roots): upload "
                              "the file instead, or ask the operator to list its folder in security.allowed_roots")
        return Path(os.path.realpath(path))


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is 1-80 characters of letters, digits, '.', '_' or '-' starting with a letter or
    digit (so it is one folder name: no '/', no '..', not hidden); else a StudioError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise StudioError(f"the {what} {name!r} must be 1-80 letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit")
    return name


def slug(text: str, default: str = "run") -> str:
    """A folder-safe name made from ``text`` (a file stem, a model name): other characters become '_'."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-")[:80].replace("..", "_")
    return out or default


def inside_home(path: str | Path, what: str = "run folder") -> Path:
    """``path`` if its resolved location is inside STUDIO_HOME; else a StudioError."""
    real = Path(os.path.realpath(path))
    home = Path(os.path.realpath(studio_home()))
    if not real.is_relative_to(home) or real == home:
        raise StudioError(f"the {what} must be inside the studio home ($STUDIO_HOME)")
    return real


def unique_run_dir(*parts: str, name: str) -> Path:
    """A run folder path under the studio home that does not exist yet: NAME-YYYYmmdd-HHMMSS[-n].

    ``parts`` are the studio's own sub-folders ("runs", "generative"); ``name`` must pass
    :func:`check_name` (callers pass :func:`slug` of derived names), so the folder stays inside
    STUDIO_HOME whatever a user typed.
    """
    check_name(name, "run name")
    base = home_dir(*parts) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    inside_home(out.parent, "run folder")
    return out


def new_run_dir(kind: str, name: str) -> Path:
    """A fresh run folder ``STUDIO_HOME/runs/KIND/NAME-TIME`` for a training run; ``name`` (a model and
    dataset, a data file's stem) is made folder-safe with :func:`slug`. The CLI and the UI both name
    runs here."""
    return unique_run_dir("runs", check_name(kind, "run kind"), name=slug(name))
