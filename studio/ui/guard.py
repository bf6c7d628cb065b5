"""What every tab handler shares to treat its inputs as untrusted: each handler is an HTTP endpoint.

- :func:`fail` turns a core error into a ``gr.Error`` whose text names no server folder (the
  studio home, the upload folder, the installation and the user's home become short labels;
  any other absolute path is reduced to its last part).
- :func:`as_int` / :func:`as_float` read a number widget's value (or whatever a client posted in
  its place) with a clear refusal for anything that is not a number; the bounds themselves are the
  core's (``studio.limits``).
- :func:`choice` accepts a value only from a fixed list (a dropdown's choices are a suggestion to
  the browser, not a check on the server).
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import gradio as gr

from studio.env import studio_home
from studio.errors import StudioError
from studio.limits import check_text
from studio.paths import CONFIGS, uploads_dir

_ABS = re.compile(r"(?<![\w.~$<:/-])/(?:[^\s'\"`:,;()<>]+/)*[^\s'\"`:,;()<>]*")


def public(message: str) -> str:
    """``message`` without server paths: known folders get labels, other absolute paths keep their name only."""
    labels = [(uploads_dir(), "upload:"), (studio_home(), "$STUDIO_HOME"), (CONFIGS, "configs"),
              (Path(sys.prefix), "<python>"), (CONFIGS.parent, "<studio>"), (Path.home(), "~")]
    for folder, label in labels:
        for form in {str(folder), os.path.realpath(folder)}:
            if form and form != "/":
                message = message.replace(form, label)
    return _ABS.sub(lambda m: Path(m.group(0)).name or "/", message)


def fail(exc: Exception | str) -> gr.Error:
    """A ``gr.Error`` for the user: the core's sentence without server paths (``raise fail(exc) from None``)."""
    return gr.Error(public(str(exc)))


def as_int(value, name: str, default: int | None = None) -> int:
    """A widget's whole number; a clear error for text, fractions, NaN or nothing."""
    return int(_number(value, name, default, whole=True))


def as_float(value, name: str, default: float | None = None) -> float:
    """A widget's number; a clear error for text, NaN, infinity or nothing."""
    return _number(value, name, default, whole=False)


def _number(value, name: str, default, whole: bool) -> float:
    kind = "a whole number" if whole else "a finite number"
    if value in (None, "") and default is not None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be {kind}") from None
    if not math.isfinite(number) or abs(number) > 2**63 or (whole and not number.is_integer()):
        raise gr.Error(f"{name} must be {kind}")
    return number


def choice(value, allowed, name: str):
    """``value`` if it is one of ``allowed``; else a refusal listing them."""
    if value not in allowed:
        raise gr.Error(f"{name} must be one of: {', '.join(map(str, allowed))}")
    return value


def text(value, name: str, limit: str = "message_chars") -> str:
    """A text widget's value within ``limits.<limit>`` characters."""
    try:
        return check_text(name, "" if value is None else value, limit)
    except StudioError as exc:
        raise fail(exc) from None
