"""Wiring handlers that speak plain names to a tab's components.

A tab keeps its components in a dict ``ui`` (name -> component). Its handlers are module-level
functions that take ``{name: value}`` and return, or yield, ``{name: new value or update}`` for the
outputs they change (an output they leave out stays as it is). :func:`on` wires one to an event with
Gradio's set-of-inputs form, so a handler never depends on the order of a list of components and can
be unit-tested with plain dicts, without a browser:

>>> on(ui["send"].click, partial(respond, services=services), ui, inputs=["message", "k"], outputs=["chat"])
>>> next(respond({"message": "Hi", "k": 4}, services=services))["chat"]

A handler that takes a ``progress`` keyword gets Gradio's progress tracker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

Values = dict[str, Any]


def _wants_progress(fn: Callable) -> bool:
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def on(trigger: Callable, fn: Callable, ui: dict[str, Any], inputs: Sequence[str] = (),
       outputs: Sequence[str] = (), **event_kwargs):
    """``trigger(wrapper, {inputs}, [outputs], **event_kwargs)`` with ``fn`` speaking names; returns the
    event (for ``cancels=`` and ``.then``)."""
    names = {ui[n]: n for n in inputs}
    out = [ui[n] for n in outputs]

    def named(values: dict | None) -> Values:
        return {names[c]: v for c, v in (values or {}).items()}

    def comps(update: Values | None) -> dict:
        return {} if update is None else {ui[n]: v for n, v in update.items()}

    progress = _wants_progress(fn)
    if inspect.isgeneratorfunction(fn):
        def run(values, tracker=None):
            for update in fn(named(values), **({"progress": tracker} if progress else {})):
                yield comps(update)
    else:
        def run(values, tracker=None):
            return comps(fn(named(values), **({"progress": tracker} if progress else {})))

    wrapper = _signed(run, bool(names), progress, inspect.isgeneratorfunction(fn))
    wrapper.__name__ = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "handler")
    return trigger(wrapper, set(names) if names else None, out, **event_kwargs)


def _signed(run: Callable, takes_values: bool, progress: bool, generator: bool) -> Callable:
    """``run`` behind the exact signature Gradio inspects: a values argument only when there are inputs,
    a ``progress=gr.Progress()`` default only when the handler wants one, a generator when it streams."""
    if generator:
        if takes_values and progress:
            def wrapper(values, progress=gr.Progress()):  # noqa: B008 - Gradio injects the tracker
                yield from run(values, progress)
        elif takes_values:
            def wrapper(values):
                yield from run(values)
        elif progress:
            def wrapper(progress=gr.Progress()):  # noqa: B008
                yield from run(None, progress)
        else:
            def wrapper():
                yield from run(None)
        return wrapper
    if takes_values and progress:
        def wrapper(values, progress=gr.Progress()):  # noqa: B008
            return run(values, progress)
    elif takes_values:
        def wrapper(values):
            return run(values)
    elif progress:
        def wrapper(progress=gr.Progress()):  # noqa: B008
            return run(None, progress)
    else:
        def wrapper():
            return run(None)
    return wrapper
