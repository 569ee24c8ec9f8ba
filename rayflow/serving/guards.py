"""What every rayflow HTTP service puts in front of its routes: bearer-token auth, a request size limit,
a per-request timeout, and 4xx errors whose message names the offending field.

Errors use the OpenAI error body, `{"error": {"message", "type", "param", "code"}}`, so the official
`openai` client raises its usual exceptions with our message. `GET /healthz` stays open so load balancers
and Kubernetes probes need no token.
"""

from __future__ import annotations

import asyncio
import hmac
import os

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from rayflow.config import Config


class HTTPConfig(Config):
    """Limits and auth of one HTTP service. Give the token through `api_key_env` in production: Serve shows
    application args in its dashboard and `serve status`."""

    api_key: str | None = Field(None, description="bearer token clients must send; None = no auth")
    api_key_env: str | None = Field(None, description="env var holding the bearer token (instead of api_key)")
    max_request_bytes: int = Field(1 << 20, ge=1, description="larger request bodies get 413")
    request_timeout_s: float = Field(120.0, gt=0, description="requests running longer get 504")

    @model_validator(mode="after")
    def _one_token_source(self) -> HTTPConfig:
        if self.api_key and self.api_key_env:
            raise ValueError("set api_key or api_key_env, not both")
        return self

    def token(self) -> str | None:
        """The bearer token in force; a named env var that is unset is an error, not an open door."""
        if self.api_key_env is None:
            return self.api_key
        token = os.environ.get(self.api_key_env)
        if not token:
            raise ValueError(
                f"http.api_key_env names {self.api_key_env!r}, which is not set in the replica's environment"
            )
        return token


def error_body(message: str, status: int, param: str | None = None) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large", 504: "timeout"}
    return {
        "error": {
            "message": message,
            "type": kind.get(status, "invalid_request_error"),
            "param": param,
            "code": status,
        }
    }


def _field(loc: tuple) -> str:
    """`("body", "items", 2, "scheme")` -> `items[2].scheme`."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        field = _field(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        named, sep, rest = message.partition(": ")
        if err["type"] == "value_error" and sep and named.isidentifier():
            # Model-level checks name their field first ("rules: ..."): report that field.
            field, message = (named if field == "body" else f"{field}.{named}"), rest
        problems.append((field, f"{field}: {message}"))
    first_field = problems[0][0] if problems else None
    return JSONResponse(error_body("; ".join(m for _, m in problems), 400, first_field), status_code=400)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):  # raised with error_body(...) already
        return JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(
        error_body(str(exc.detail), exc.status_code), status_code=exc.status_code, headers=exc.headers
    )


def bad_request(message: str, param: str | None = None, status: int = 400) -> HTTPException:
    return HTTPException(status, detail=error_body(message, status, param))


def bearer_auth(config: HTTPConfig):
    """A FastAPI dependency refusing requests without `Authorization: Bearer <token>` (when a token is set)."""
    token = config.token()

    async def check(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, detail=error_body("missing bearer token (Authorization: Bearer <token>)", 401),
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(
                401, detail=error_body("invalid bearer token", 401), headers={"WWW-Authenticate": "Bearer"}
            )

    return Depends(check)


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    """ASGI middleware: 413 for bodies over `max_request_bytes` (declared or streamed), 504 past the timeout.

    A timeout after the response has started (a long stream) can only close the connection.
    """

    def __init__(self, app, config: HTTPConfig):
        self.app = app
        self.max_bytes = config.max_request_bytes
        self.timeout = config.request_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reply(
                send, 413, f"request body is {int(declared)} bytes; the limit is {self.max_bytes}"
            )
        seen, started, too_large = 0, False, False

        async def counting_receive():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if too_large:  # the app may turn the aborted read into its own error: answer 413 instead
                if not started:
                    started = True
                    await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
                return
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, counting_receive, tracking_send), self.timeout)
        except _TooLarge:
            if not started:
                await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
        except TimeoutError:
            if not started:
                await self._reply(send, 504, f"request took longer than {self.timeout:g} s")

    @staticmethod
    async def _reply(send, status: int, message: str) -> None:
        response = JSONResponse(error_body(message, status), status_code=status)
        await response({"type": "http"}, None, send)


def guarded_app(title: str, config: HTTPConfig) -> FastAPI:
    """A FastAPI app with the size/timeout middleware and field-naming error handlers installed.

    Attach `bearer_auth(config)` to the routes that need a token (everything but `/healthz`).
    """
    app = FastAPI(title=title)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(GuardMiddleware, config=config)
    return app
