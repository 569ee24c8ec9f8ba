"""Retries of transient HTTP failures for clients of a rayflow endpoint inside a job.

A Ray Data job that asks a served model (the endpoint judge of the safety evaluation, the engine's `openai`
backend) must not fail on one dropped connection or one 5xx while a replica restarts. `call_with_retries`
repeats a request after a connection error, a timeout, 408, 429 or any 5xx, waiting an exponentially growing,
jittered delay between attempts (or the server's `Retry-After`, within the same cap), and gives up after a
bounded number of attempts by raising the last error. Every other failure (400, 401, 404, ...) is the
caller's and is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries; before try n+1 a wait drawn uniformly from [d/2, d], d = min(`backoff_s` *
    2**(n-1), `max_backoff_s`) seconds ("equal jitter": growing, never zero, never in lockstep with other
    actors). With the defaults the waits add up to at most 15.5 s over 6 attempts."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay_s(
        self, retry: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number `retry` (1-based); a server's `Retry-After` is honoured up to
        `max_backoff_s`."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        cap = min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)
        return cap / 2 + (rng or random).uniform(0, cap / 2)


DEFAULT_POLICY = RetryPolicy()


def transient_status(status: int) -> bool:
    """408 (request timeout), 429 (too many requests) and every 5xx: worth the same request again."""
    return status in (408, 429) or status >= 500


class TransientHTTPError(RuntimeError):
    """A reply with a transient status (see `transient_status`), raised by `check_reply`."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}: {response.text[:300]}")
        self.response = response


def check_reply(response: httpx.Response) -> httpx.Response:
    """`response` itself, or `TransientHTTPError` when its status is transient, so `call_with_retries`
    repeats it; other statuses are left to the caller."""
    if transient_status(response.status_code):
        raise TransientHTTPError(response)
    return response


def is_transient(err: BaseException) -> bool:
    """A connection error or timeout (httpx's, or the `openai` client's, which wraps them), or an HTTP error
    whose status is transient."""
    if isinstance(err, httpx.TransportError):
        return True
    # Duck-typed: the `openai` client's errors carry a response of its own bundled httpx.
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return transient_status(status)
    try:
        import openai
    except ImportError:
        return False
    return isinstance(err, openai.APIConnectionError)  # its APITimeoutError too


def _retry_after_s(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: use our own backoff
        return None


def call_with_retries(
    request: Callable[[], T],
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`request()`, repeated after transient failures (`is_transient`) as `policy` says; raises the last
    error when the attempts run out, and any other error at once. `what` names the request in the warning
    logged before each retry."""
    attempt = 1
    while True:
        try:
            return request()
        except Exception as err:
            if attempt >= policy.attempts or not is_transient(err):
                raise
            wait = policy.delay_s(attempt, _retry_after_s(err))
            log.warning("%s failed (%s: %s); retry %d of %d in %.1f s", what, type(err).__name__, err,
                        attempt, policy.attempts - 1, wait)  # fmt: skip
            sleep(wait)
            attempt += 1
