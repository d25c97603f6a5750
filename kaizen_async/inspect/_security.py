"""The inspector's guards, as plain ASGI middleware: GET and HEAD only, known Host names
only (DNS rebinding), an access token when one is set, and strict response headers."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "DOWNLOAD_CSP",
    "LOOPBACK_HOSTS",
    "Guard",
    "TOKEN_COOKIE",
    "host_allowed",
    "is_loopback",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: for downloads: nothing may run or load even if a browser rendered one
DOWNLOAD_CSP = "default-src 'none'; sandbox"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
TOKEN_COOKIE = "kaizen_inspect_token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _split_host(value: str) -> str:
    """The host name of a ``Host`` header, without its port."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(header: str | None, allowed: Iterable[str]) -> bool:
    if not header:
        return False
    host = _split_host(header)
    return any(host == name.lower() or name == "*" for name in allowed)


def _plain(status: int, text: str) -> list[Message]:
    body = text.encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *_security_headers(),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


def _security_headers() -> list[tuple[bytes, bytes]]:
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]


class Guard:
    """Wraps the inspector: refuses what it must not serve, adds the security headers.

    * a method other than GET/HEAD: 405;
    * a ``Host`` header not in ``allowed_hosts``: 400 (a page on another site that
      resolves its own name to 127.0.0.1 cannot read the inspector);
    * with ``token`` set: 403 unless the request carries it (``?token=`` once, which sets
      a same-site cookie, then the cookie).
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str], token: str | None) -> None:
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts)
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal: tuple[int, str] | None = None
        if scope["method"] not in _SAFE_METHODS:
            refusal = (405, "the inspector is read-only: only GET and HEAD are served\n")
        elif not host_allowed(headers.get("host"), self.allowed_hosts):
            refusal = (400, "invalid host header\n")
        set_cookie = False
        if refusal is None and self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0]
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:
                cookie = SimpleCookie()
            jar = cookie.get(TOKEN_COOKIE)
            if given and hmac.compare_digest(given, self.token):
                set_cookie = True
            elif jar is None or not hmac.compare_digest(jar.value, self.token):
                refusal = (403, "an access token is required: open the URL the server printed\n")
        if refusal is not None:
            messages = _plain(*refusal)
            if refusal[0] == 405:
                messages[0]["headers"].append((b"allow", b"GET, HEAD"))
            for message in messages:
                await send(message)
            return
        token = self.token
        cookie_path = scope.get("root_path") or "/"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                names = {name.lower() for name, _ in raw}
                if b"content-security-policy" not in names:
                    raw.append((b"content-security-policy", CSP.encode()))
                raw.extend(h for h in _security_headers() if h[0] not in names)
                if set_cookie and token is not None:
                    raw.append(
                        (
                            b"set-cookie",
                            f"{TOKEN_COOKIE}={token}; Path={cookie_path}; HttpOnly; "
                            "SameSite=Strict".encode(),
                        )
                    )
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)
