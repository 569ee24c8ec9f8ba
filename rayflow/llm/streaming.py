"""Generated tokens, one at a time, as the text deltas a stream sends: incremental detokenisation and stop strings.

`generate` decodes a completion's tokens at the end and cuts the text at the earliest stop string
(`truncate_at_stop`). A stream must send the same text while it is written, so `StreamText` decodes each
token once (tokenizers' `DecodeStream`; a multi-byte character split over tokens adds "" until it is
whole) and holds back any tail that could be the start of a stop string until the next token settles it.
The deltas therefore join to exactly what `generate` returns.

`astream` runs an engine's (blocking) stream for async code, and `stream_from_engine` makes it a `Stream`,
the async function the assistant writes its answer through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor

from rayflow.llm.prompts import truncate_at_stop
from rayflow.llm.types import Delta, Engine, Prompt, PromptRejected, SamplingParams, Stream


class StreamText:
    """The text of one completion, fed a token at a time (`add`), released as it becomes certain."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.stop = tuple(stop)
        self.held = ""  # decoded, not yet sent: it may be the start of a stop string
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._tokenizer = tokenizer
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._decoder = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._decoded = ""  # all the text decoded so far, sent or held

    def add(self, token: int) -> tuple[str, bool]:
        """Feed one generated token; returns (text to send now, whether a stop string ended the completion)."""
        self.held += self._decode(token)
        text, stopped = truncate_at_stop(self.held, self.stop)
        if stopped:
            self.held = ""
            return text, True
        keep = self._stop_prefix_length(self.held)
        text, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return text, False

    def finish(self) -> str:
        """The text held back at the end of generation (no stop string came), and the bytes of a character
        the last tokens left incomplete, decoded as `generate` decodes them (U+FFFD)."""
        whole = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        tail = whole[len(self._decoded) :] if whole.startswith(self._decoded) else ""
        text, self.held = truncate_at_stop(self.held + tail, self.stop)[0], ""
        return text

    def _decode(self, token: int) -> str:
        self._ids.append(token)
        if self._backend is not None:
            piece = self._decoder.step(self._backend, token) or ""
        else:
            # A slow tokenizer re-decodes the prefix; an incomplete character (U+FFFD at the end) waits.
            full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
            piece = "" if full.endswith("\ufffd") else full[len(self._decoded) :]
        self._decoded += piece
        return piece

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest tail of `text` that a stop string starts with (0: nothing to hold back)."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best


async def astream(
    engine: Engine,
    prompt: Prompt,
    params: SamplingParams,
    executor: Executor | None = None,
    on_delta: Callable[[], None] | None = None,
) -> AsyncIterator[Delta | PromptRejected]:
    """`engine.stream(prompt, params)` for async code: the engine's iterator runs on `executor` (default: a
    new thread) and each delta is handed to the event loop as soon as the engine yields it; `on_delta` is
    called on that thread per delta. A consumer that stops early stops the engine's stream after its next
    delta. Raises what the engine raised."""
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def pump() -> None:
        stream = engine.stream(prompt, params)
        try:
            for delta in stream:
                if on_delta is not None:
                    on_delta()
                loop.call_soon_threadsafe(deltas.put_nowait, delta)
                if gone.is_set():
                    break
        finally:
            stream.close()

    job = loop.run_in_executor(executor, pump)
    job.add_done_callback(lambda _: deltas.put_nowait(None))
    try:
        while (delta := await deltas.get()) is not None:
            yield delta
        await job
    finally:
        gone.set()


def stream_from_engine(engine: Engine) -> Stream:
    """A `Stream` over a local engine (jobs, tests); the Serve deployment's is
    `rayflow.serving.llm.stream_from_deployment`."""

    def stream(prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta | PromptRejected]:
        return astream(engine, prompt, params)

    return stream
