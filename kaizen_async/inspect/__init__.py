"""The session inspector: a read-only web page over a hub's sessions.

``create_app(hub)`` returns an ASGI application to mount in a server or to serve with
``kaizen inspect``. It needs the optional extra: ``pip install 'kaizen-async[inspect]'``
(Starlette, Jinja2, uvicorn).
"""

from __future__ import annotations

try:
    import jinja2 as _jinja2  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as _missing:  # pragma: no cover - depends on the install
    raise ImportError(
        "kaizen_async.inspect needs the 'inspect' extra: pip install 'kaizen-async[inspect]' "
        f"({_missing.name} is missing)"
    ) from _missing

from ._app import create_app as create_app

__all__ = ["create_app"]
