"""What every rayflow HTTP service puts in front of its routes: bearer-token auth checked before the body is
read, a request size limit, valid Unicode in every JSON string, a per-request timeout, list-size limits, and
errors in the OpenAI error body, `{"error": {"message", "type", "param", "code"}}`, so the official `openai`
client raises its usual exceptions with our message.

A client's mistake is a 4xx whose message starts with the field at fault (`items[2].id: ...`); a failure of
the server while answering is a 500 with the same body (the details go to the replica's log). A route needs
the token when it declares `dependencies=[bearer_auth(config)]`; the middleware checks it for those routes
before reading the body. Routes without it stay open (`/healthz`, so load balancers and Kubernetes probes
need no token; a web page). With a token set, the API docs (`/docs`, `/openapi.json`) need it too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Sized

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rayflow.config import Config
from rayflow.llm import unicode_problem

logger = logging.getLogger(__name__)


class HTTPConfig(Config):
    """Limits and auth of one HTTP service. Give the token through `api_key_env` in production: Serve shows
    application args in its dashboard and `serve status`."""

    api_key: str | None = Field(None, description="bearer token clients must send; None = no auth")
    api_key_env: str | None = Field(None, description="env var holding the bearer token (instead of api_key)")
    max_request_bytes: int = Field(1 << 20, ge=1, description="larger request bodies get 413")
    request_timeout_s: float = Field(120.0, gt=0, description="requests running longer get 504")
    max_items: int = Field(256, ge=1, description="entries in one batch request's `items` list")
    max_messages: int = Field(256, ge=1, description="messages in one chat request")
    max_stop: int = Field(4, ge=1, description="stop strings in one completion request (OpenAI's limit)")

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
    """The OpenAI error body; `type` follows the status (4xx without a special kind: invalid_request_error)."""
    kind = {401: "authentication_error", 404: "not_found_error", 405: "method_not_allowed",
            413: "request_too_large", 500: "server_error", 503: "service_unavailable", 504: "timeout"}  # fmt: skip
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


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):  # raised with error_body(...) already
        return JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    message = str(exc.detail)
    if exc.status_code in (404, 405):  # Starlette's routing errors: say which request missed
        message = f"{message}: {request.method} {request.url.path}"
    return JSONResponse(
        error_body(message, exc.status_code), status_code=exc.status_code, headers=exc.headers
    )


def bad_request(message: str, param: str | None = None, status: int = 400) -> HTTPException:
    return HTTPException(status, detail=error_body(message, status, param))


def check_count(values: Sized | None, field: str, limit: int) -> None:
    """A 400 naming `field` when the list `values` has more than `limit` entries."""
    if values is not None and len(values) > limit:
        raise bad_request(f"{field}: {len(values)} entries; the limit is {limit} per request", field)


def _auth_problem(header: str, token: str) -> str | None:
    """Why an `Authorization` header does not carry `token`, or None when it does."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return "missing bearer token (Authorization: Bearer <token>)"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "invalid bearer token"
    return None


def bearer_auth(config: HTTPConfig):
    """A FastAPI dependency marking a route as needing `Authorization: Bearer <token>` (when a token is set).

    `guarded_app`'s middleware sees the mark and refuses requests without the token before their body is
    read; the dependency checks again, for an app not built by `guarded_app`.
    """
    token = config.token()

    async def check(request: Request) -> None:
        problem = None if token is None else _auth_problem(request.headers.get("authorization", ""), token)
        if problem:
            raise HTTPException(401, detail=error_body(problem, 401), headers={"WWW-Authenticate": "Bearer"})

    check.needs_token = True
    return Depends(check)


def _needs_token(route) -> bool:
    dependant = getattr(route, "dependant", None)
    return dependant is not None and any(
        getattr(d.call, "needs_token", False) for d in dependant.dependencies
    )


def invalid_text(value) -> tuple[str, str] | None:
    """The first string (key or value) in a parsed JSON value that is not valid Unicode: (field, problem).

    Fields are named like validation errors, `items[2].id`. Iterative, so deep nesting cannot overflow.
    """
    todo = [("", value)]
    while todo:
        path, v = todo.pop()
        if isinstance(v, str):
            problem = unicode_problem(v)
            if problem:
                return path or "body", problem
        elif isinstance(v, dict):
            for key, item in reversed(v.items()):
                if unicode_problem(key):  # named with the surrogate escaped, so the reply can be encoded
                    key = key.encode("utf-8", "backslashreplace").decode()
                    return (f"{path}.{key}" if path else key), "this key is not valid Unicode"
                sub = f"{path}.{key}" if path else key
                todo.append((sub, item))
        elif isinstance(v, list):
            todo.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(v))))
    return None


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    """ASGI middleware, in this order: 401 without the token (before any body byte is read), 413 for bodies
    over `max_request_bytes` (declared or streamed), 400 for a JSON body holding invalid Unicode, 504 past
    the timeout, and a 500 in the OpenAI error body for any exception the routes raise.

    The body is read whole here (it is bounded by the size limit) and handed on to the app unchanged. A
    timeout after the response has started (a long stream) can only close the connection.
    """

    def __init__(self, app, config: HTTPConfig, router: APIRouter, docs: frozenset[str] = frozenset()):
        self.app = app
        self.router = router  # the app's live routes: which need the token
        self.docs = docs
        self.token = config.token()
        self.max_bytes = config.max_request_bytes
        self.timeout = config.request_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.token is not None and self._needs_token(scope):
            problem = _auth_problem(headers.get(b"authorization", b"").decode("latin-1"), self.token)
            if problem:
                return await _reply(send, 401, problem, headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(
                send, 413, f"request body is {int(declared)} bytes; the limit is {self.max_bytes}"
            )
        started = False

        async def tracking_send(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self._guarded(scope, receive, tracking_send), self.timeout)
        except _TooLarge:
            await _reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
        except TimeoutError:
            if not started:
                await _reply(send, 504, f"request took longer than {self.timeout:g} s")
        except Exception as err:  # any failure of a route is answered in the error body, never bare
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await _reply(send, 500, f"the server failed to answer ({type(err).__name__}); see its log")

    def _needs_token(self, scope) -> bool:
        if _route_path(scope) in self.docs:
            return True
        return any(_needs_token(r) for r in self.router.routes if r.matches(scope)[0] != Match.NONE)

    async def _guarded(self, scope, receive, send) -> None:
        body = await self._read_body(receive)
        if body is None:  # the client went away
            return
        if body:
            try:
                found = invalid_text(json.loads(body))
            except (ValueError, RecursionError):  # not JSON: the route answers that with its own 400
                found = None
            if found is not None:
                field, problem = found
                return await _reply(send, 400, f"{field}: {problem}", param=field)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes | None:
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _route_path(scope) -> str:
    """The path inside the application (Serve mounts an app under its route prefix, given as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


async def _reply(
    send, status: int, message: str, param: str | None = None, headers: dict | None = None
) -> None:
    response = JSONResponse(error_body(message, status, param), status_code=status, headers=headers)
    await response({"type": "http"}, None, send)


def guarded_app(title: str, config: HTTPConfig) -> FastAPI:
    """A FastAPI app with the guards (`GuardMiddleware`) and field-naming error handlers installed. Declare
    `dependencies=[bearer_auth(config)]` on every route that needs the token (all but `/healthz` and pages)."""
    app = FastAPI(title=title)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Starlette's own errors too (404 no such route, 405 wrong method), so every error has the same body.
    app.add_exception_handler(StarletteHTTPException, _http_error)
    docs = frozenset(
        filter(None, (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url))
    )
    app.add_middleware(GuardMiddleware, config=config, router=app.router, docs=docs)
    return app
