"""The FastAPI application: routes, the page, auth, a body limit and one log line a request.

Example::

    from t2i_server.app import create_app
    from t2i_server.settings import ServeSettings

    app = create_app(ServeSettings(max_models=2))   # then: uvicorn.run(app, port=7860)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from importlib import resources
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from t2i_server import __version__
from t2i_server.a1111 import controlnet_router
from t2i_server.a1111 import router as a1111_router
from t2i_server.native import router as native_router
from t2i_server.settings import ServeSettings
from t2i_server.state import Server

log = structlog.get_logger("t2i.server")


def create_app(settings: ServeSettings | None = None, manager: Any = None) -> FastAPI:
    """The app for ``settings`` on ``manager`` (default: the process-wide plugins)."""
    from t2i.plugins import get_plugin_manager

    settings = settings or ServeSettings()
    app = FastAPI(
        title="t2i",
        version=__version__,
        description="t2i serve: the A1111 /sdapi/v1 subset, the native /t2i/v1 job API "
        "and the web page, for every installed family.",
    )
    app.state.t2i = Server(settings, manager or get_plugin_manager())
    app.include_router(a1111_router)
    app.include_router(controlnet_router)
    app.include_router(native_router)
    static = resources.files("t2i_server") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc), status_code=422)

    @app.on_event("shutdown")
    def stop_worker() -> None:
        app.state.t2i.worker.stop()

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(TokenAuth, token=settings.token)
    app.add_middleware(RequestLog)
    return app


def validation_error(exc: RequestValidationError) -> dict[str, Any]:
    """FastAPI's 422 detail plus ``field`` and a one-line ``detail`` naming it."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        field, message = "body", f"body: is not valid JSON ({first.get('ctx', {}).get('error')})"
    else:
        field = ".".join(loc) or "body"
        message = f"{field}: {first.get('msg', 'invalid')} (got {_short(first.get('input'))})"
    return {
        "error": "RequestValidationError",
        "field": field,
        "detail": message,
        "errors": json.loads(json.dumps(errors, default=str)),
    }


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def _send_json(send: Any, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 (declared length, or counted as read)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(send, size)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: int) -> None:
        await _send_json(
            send,
            413,
            {
                "error": "PayloadTooLarge",
                "field": "body",
                "detail": f"body: {size} bytes is over the limit of {self.limit} "
                "(t2i serve --max-body-mb)",
            },
        )


class TokenAuth:
    """With a token, every request needs ``Authorization: Bearer TOKEN`` or HTTP Basic
    auth whose password is the token (any user name: the web UI's login form)."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.token:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._allowed(headers.get(b"authorization", b"").decode("latin-1")):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _send_json(
            send,
            401,
            {
                "error": "Unauthorized",
                "field": "Authorization",
                "detail": "Authorization: give 'Bearer TOKEN' or Basic auth with the token "
                "as the password",
            },
            [(b"www-authenticate", b'Basic realm="t2i"')],
        )

    def _allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
            password = decoded.partition(":")[2]
            return hmac.compare_digest(password.encode(), self.token.encode())
        return False


class RequestLog:
    """One structlog line per request: method, path, status, milliseconds, client."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("", 0)
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status["code"],
                ms=round((time.perf_counter() - started) * 1000, 1),
                client=f"{client[0]}:{client[1]}",
            )
