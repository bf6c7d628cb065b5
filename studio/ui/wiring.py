"""Wiring handlers that speak plain names to a tab's components.

A tab keeps its components in a dict ``ui`` (name -> component). Its handlers are module-level
functions that take ``{name: value}`` and return, or yield, ``{name: new value or update}`` for the
outputs they change (an output they leave out stays as it is). :func:`on` wires one to an event, so a
handler never depends on the position of a component in a list and is unit-tested with plain dicts,
without a browser:

>>> on(ui["send"].click, partial(respond, services=services), ui, inputs=["message", "k"], outputs=["chat"])
>>> next(respond({"message": "Hi", "k": 4}, services=services))["chat"]

The endpoint Gradio serves for the event takes the inputs as named parameters (``message``, ``k``),
so an API client calls it by those names. A handler that takes a ``progress`` keyword gets Gradio's
progress tracker; one that takes ``user`` gets who is logged in (the account name from Gradio's login,
or ``local`` when the studio has no accounts), taken from the request on the server, never from
anything the client sends; one that takes ``session`` gets Gradio's id of the page that sent the event.

``turns=(Turns, output)`` makes a handler wait for its account's turn (:mod:`studio.turns`): while an
earlier generation of the same account runs, a streaming handler's ``output`` component says its place in
line (another handler's toast says it once); the turn is given back when the handler ends, fails, is
stopped or its page is closed.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import gradio as gr

from studio.env import LOCAL_USER

Values = dict[str, Any]
_P = inspect.Parameter


def _wants(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def user_of(request: gr.Request | None) -> str:
    """Who sent ``request``: the logged-in account, or the local user of a studio without accounts."""
    return getattr(request, "username", None) or LOCAL_USER


def _streamed_in_turn(turns: tuple, user: str, work: Callable) -> Iterator[Values]:
    """``work()``'s updates once ``user``'s turn comes; until then, their place in line in ``turns[1]``."""
    ticket = turns[0].enter(user)
    try:  # GeneratorExit (Stop, a closed page) lands here too and gives the turn back
        while not ticket.wait(1.0):
            yield {turns[1]: f"*waiting for your other reply to finish: place {ticket.place()} in your line*"}
        yield from work()
    finally:
        ticket.leave()


def paced(items: Iterable, per_second: float) -> Iterator:
    """``items`` at most ``per_second`` a second: the first at once, then the latest one each time the interval
    has passed, and the last one always. A streaming reply is redrawn a few times a second instead of once
    per token: each redraw is a Gradio update (postprocessing, diff, event) worked out while llama.cpp's
    threads, one per core, wait for the core. Measured on this 2-core machine (benchmarks/shared_load.py,
    8 accounts' plain chats at once): 15.7 tokens/s in aggregate redrawn at every token, 20.4 redrawn 8 times
    a second."""
    every, last, held = 1.0 / per_second, None, False
    item = None
    for item in items:
        now = time.monotonic()
        if last is None or now - last >= every:
            last, held = now, False
            yield item
        else:
            held = True
    if held:
        yield item


def _in_turn(turns: tuple, user: str, work: Callable):
    """``work()`` once ``user``'s turn comes (with no stream to show the place in, a toast says it once)."""
    ticket = turns[0].enter(user)
    try:
        if not ticket.wait(0.0):
            gr.Info(f"Waiting for your other run to finish (place {ticket.place()} in your line).")
            ticket.wait(None)
        return work()
    finally:
        ticket.leave()


def on(trigger: Callable, fn: Callable, ui: dict[str, Any], inputs: Sequence[str] = (),
       outputs: Sequence[str] = (), defaults: dict[str, Any] | None = None, turns: tuple | None = None,
       **event_kwargs):
    """``trigger(wrapper, [inputs], [outputs], **event_kwargs)`` with ``fn`` speaking names; returns the
    event (for ``cancels=`` and ``.then``). ``defaults``: values of trailing inputs an API client may leave
    out (inputs added to an endpoint later go last, with a default, so older clients keep working)."""
    progress, wants_user, wants_session = _wants(fn, "progress"), _wants(fn, "user"), _wants(fn, "session")
    user = wants_user or wants_session or turns is not None
    defaults = defaults or {}
    params = [_P(n, _P.POSITIONAL_OR_KEYWORD, **({"default": defaults[n]} if n in defaults else {}))
              for n in inputs]
    if progress:
        params.append(_P("progress", _P.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    if user:  # Gradio fills a gr.Request parameter itself; it is not an input of the endpoint
        params.append(_P("request", _P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request))
    signature = inspect.Signature(params)

    streams = inspect.isgeneratorfunction(fn)

    def call(args, kwargs):
        bound = signature.bind(*args, **kwargs)
        who = user_of(bound.arguments.get("request"))
        extra = {"progress": bound.arguments.get("progress", gr.Progress())} if progress else {}
        if wants_user:
            extra["user"] = who
        if wants_session:  # the page (browser tab) that sent the event; "" for a client without one
            extra["session"] = getattr(bound.arguments.get("request"), "session_hash", None) or ""
        work = partial(fn, {n: bound.arguments[n] for n in inputs}, **extra)
        if turns is None:
            return work()
        return (_streamed_in_turn if streams else _in_turn)(turns, who, work)

    def comps(update: Values | None) -> dict | None:
        if not outputs:
            return None
        if not update:  # Gradio wants an answer for the outputs: "leave them as they are"
            return {ui[n]: gr.skip() for n in outputs}
        return {ui[n]: v for n, v in update.items()}

    if streams:
        def wrapper(*args, **kwargs):
            for update in call(args, kwargs):
                yield comps(update)
    else:
        def wrapper(*args, **kwargs):
            return comps(call(args, kwargs))
    wrapper.__signature__ = signature  # what Gradio reads for the endpoint's parameters and the tracker
    wrapper.__annotations__ = {"request": gr.Request} if user else {}  # (it finds gr.Request by type hint)
    wrapper.__name__ = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "handler")
    return trigger(wrapper, [ui[n] for n in inputs], [ui[n] for n in outputs], **event_kwargs)
