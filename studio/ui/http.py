"""HTTP-level guards around the Gradio app: which Host it answers, and what its pages may load.

- **DNS rebinding.** A web page on another site can make the browser resolve its own domain to
  127.0.0.1 and then script requests to the studio's API with ``Host: evil.example``. Starlette's
  ``TrustedHostMiddleware`` refuses any request whose Host is not one this studio is served as:
  127.0.0.1, localhost, ::1, the address it is bound to, the operator's ``server.public_names``,
  and ``*.gradio.live`` when ``--share`` asked for a public link.
- **Content-Security-Policy.** Every response says images come from the studio itself only
  (``img-src 'self' data: blob:``), so even a Markdown image slipped past
  :func:`studio.markup.neutralize` cannot make the browser send data to another server.

Both are passed to Gradio through ``launch(app_kwargs={"middleware": ...})``.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studio.config import LOOPBACK, ServerConfig

CSP = "img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
SHARE_HOSTS = ("*.gradio.live",)


def allowed_hosts(server: ServerConfig) -> list[str]:
    """The Host names the server answers to (no ports: any port is fine)."""
    hosts = [*LOOPBACK, *server.public_names]
    if server.host not in ("0.0.0.0", "::", ""):
        hosts.append(server.host)
    if server.share:
        hosts.extend(SHARE_HOSTS)
    return list(dict.fromkeys(h.strip().lower() for h in hosts if h.strip()))


class SecurityHeaders:
    """Adds the Content-Security-Policy (and no-sniff) headers to every HTTP response."""

    def __init__(self, app: ASGIApp, csp: str = CSP):
        self.app = app
        self.headers = [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self.headers if k not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def middleware(server: ServerConfig) -> list[Middleware]:
    """The middleware list for ``gr.Blocks.launch(app_kwargs={"middleware": ...})``."""
    return [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(server), www_redirect=False),
            Middleware(SecurityHeaders)]
