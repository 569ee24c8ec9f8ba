"""The `hf` engine backend: transformers on CPU or GPU, in-process.

Slower than vLLM for generation but starts in a second, so tests and small jobs use it. Generation pads on
the left; scoring pads on the right and reads log-probs in fp32 from the positions of the completion only.
`stream` runs `model.generate` with a streamer on a worker thread and yields each token's text as it comes.
Prompts the model cannot serve are answered with `PromptRejected` before any forward pass (the rule is in
`rayflow.llm.prompts`), so the batches the model sees hold only good prompts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import torch

from rayflow.llm.models import resolve_model_path
from rayflow.llm.prompts import (
    generation_inputs,
    load_tokenizer,
    new_token_budget,
    scoring_inputs,
    truncate_at_stop,
)
from rayflow.llm.streaming import StreamText
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

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFEngine:
    """`Engine` over `transformers.AutoModelForCausalLM`."""

    def __init__(self, config: EngineConfig):
        from transformers import AutoModelForCausalLM

        self.config = config
        self.tokenizer = load_tokenizer(config)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        source = resolve_model_path(config.model)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=_DTYPES[config.dtype])
        except OSError as err:
            raise EngineError(f"cannot load model {source!r}: {err}") from err
        self.model.to(self.device).eval()
        self.max_len = config.max_model_len or getattr(self.model.config, "max_position_embeddings", None)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        # One call at a time on the model: a stream generates on its own thread while its caller reads it.
        self._lock = threading.Lock()
        torch.manual_seed(config.seed)

    # -- generate --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Generation | PromptRejected]:
        """Continue each prompt; returns, per prompt and in order, a `Generation` or a `PromptRejected`.

        Prompts go to the model `batch_size` at a time, grouped by their new-token budget (`max_tokens`, or
        less for a prompt near the end of the context).
        """
        params = params or SamplingParams()
        if params.temperature > 0:
            torch.manual_seed(self.config.seed if params.seed is None else params.seed)
        ids = generation_inputs(self.tokenizer, prompts, params, self.max_len, self.vocab_size)
        out: list[Generation | PromptRejected | None] = [
            x if isinstance(x, PromptRejected) else None for x in ids
        ]
        by_budget: dict[int, list[int]] = {}
        for i, x in enumerate(ids):
            if not isinstance(x, PromptRejected):
                by_budget.setdefault(new_token_budget(len(x), params.max_tokens, self.max_len), []).append(i)
        bs = self.config.batch_size
        with self._lock:
            for budget, rows in by_budget.items():
                capped = (
                    params
                    if budget == params.max_tokens
                    else params.model_copy(update={"max_tokens": budget})
                )
                for start in range(0, len(rows), bs):
                    batch = rows[start : start + bs]
                    for i, gen in zip(batch, self._generate_batch([ids[i] for i in batch], capped)):
                        out[i] = gen
        return out

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in batch)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
        result = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            return_dict_in_generate=True,
            output_logits=params.logprobs is not None,
            **self._generate_kwargs(params, width),
        )
        new_tokens = result.sequences[:, width:].tolist()
        logprobs = None
        if params.logprobs is not None:
            # Raw logits (before temperature/top-p), as vLLM reports them: [steps, B, V] -> [B, steps, V].
            logprobs = torch.stack(result.logits, dim=1).float().log_softmax(-1)
        return [self._to_generation(row, new_tokens[row], logprobs, params, len(batch[row]))
                for row in range(len(batch))]  # fmt: skip

    def _generate_kwargs(self, params: SamplingParams, width: int) -> dict:
        """`model.generate` keyword arguments for `params` (prompts left-padded to `width` tokens)."""
        pad = self.tokenizer.pad_token_id
        sample = params.temperature > 0
        gen_kwargs = {
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": pad,
        }
        if sample:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=max(params.top_k, 0))
        if params.repetition_penalty != 1.0:
            gen_kwargs["repetition_penalty"] = params.repetition_penalty
        if params.min_tokens:
            gen_kwargs["min_new_tokens"] = params.min_tokens
        if params.presence_penalty or params.frequency_penalty:
            from transformers import LogitsProcessorList

            gen_kwargs["logits_processor"] = LogitsProcessorList(
                [OutputPenalty(width, params.presence_penalty, params.frequency_penalty)]
            )
        if params.stop:
            gen_kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return gen_kwargs

    def _to_generation(
        self, row: int, tokens: list[int], logprobs, params: SamplingParams, prompt_tokens: int
    ) -> Generation:
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
            finish = "stop"
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        if stopped:
            finish = "stop"
        token_lps = None
        if logprobs is not None:
            token_lps = [self._token_logprob(logprobs[row, step], tok, params.logprobs)
                         for step, tok in enumerate(tokens)]  # fmt: skip
        return Generation(text=text, token_ids=tokens, finish_reason=finish, logprobs=token_lps,
                          prompt_tokens=prompt_tokens)  # fmt: skip

    def _token_logprob(self, dist: torch.Tensor, token: int, top_k: int | None) -> TokenLogprob:
        """`token`'s entry from one step's log-softmax `dist` [V], with the `top_k` likeliest alternatives."""
        top = {}
        if top_k:
            values, idx = dist.topk(top_k)
            top = {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(values, idx)}
        return TokenLogprob(token, self.tokenizer.decode([token]), float(dist[token]), top)

    # -- stream ----------------------------------------------------------------------------------------

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None
    ) -> Iterator[Delta | PromptRejected]:
        """Continue one prompt, yielding `Delta`s as the model writes them (their texts join to what
        `generate` returns for the same prompt and params; the last delta has `finish_reason`), or one
        `PromptRejected`. `model.generate` runs on a worker thread and hands each new token over through
        a queue; closing the iterator early stops generation after the current step."""
        params = params or SamplingParams()
        [ids] = generation_inputs(self.tokenizer, [prompt], params, self.max_len, self.vocab_size)
        if isinstance(ids, PromptRejected):
            yield ids
            return
        budget = new_token_budget(len(ids), params.max_tokens, self.max_len)
        capped = params if budget == params.max_tokens else params.model_copy(update={"max_tokens": budget})
        tokens: queue.Queue = queue.Queue()
        cancel = threading.Event()
        worker = threading.Thread(
            target=self._stream_worker, args=(ids, capped, tokens, cancel), name="hf-stream", daemon=True
        )
        worker.start()
        text = StreamText(self.tokenizer, params.stop)
        finish = "length"
        try:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                token, dist = item
                if token == self.tokenizer.eos_token_id:
                    finish = "stop"
                    break
                piece, stopped = text.add(token)
                lps = None if dist is None else [self._token_logprob(dist, token, params.logprobs)]
                yield Delta(piece, [token], lps)
                if stopped:
                    finish = "stop"
                    break
            yield Delta(text.finish(), [], [] if params.logprobs is not None else None, finish, len(ids))
        finally:
            cancel.set()
            worker.join()

    @torch.inference_mode()
    def _stream_worker(self, ids: list[int], params: SamplingParams, tokens: queue.Queue, cancel) -> None:
        """Generate for one prompt, putting (token id, log-softmax [V] or None) on `tokens` per step, then
        None; an exception is put before the None. Stops early once `cancel` is set."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
                )

        last: list[torch.Tensor] = []  # the latest step's raw logits, read by the streamer

        def keep_logits(module, args, output):
            last[:] = [output.logits[0, -1]]

        class Streamer:
            def __init__(self):
                self.prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                if not self.prompt_seen:  # generate hands the streamer the prompt first
                    self.prompt_seen = True
                    return
                dist = last[0].float().log_softmax(-1) if params.logprobs is not None else None
                tokens.put((int(value.reshape(-1)[0]), dist))

            def end(self) -> None:
                pass

        try:
            with self._lock:  # the hook sees every forward pass: no other call may run meanwhile
                hook = self.model.register_forward_hook(keep_logits) if params.logprobs is not None else None
                try:
                    if params.temperature > 0:
                        torch.manual_seed(self.config.seed if params.seed is None else params.seed)
                    self.model.generate(
                        input_ids=torch.tensor([ids], device=self.device),
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                        streamer=Streamer(),
                        stopping_criteria=StoppingCriteriaList([Cancelled()]),
                        **self._generate_kwargs(params, len(ids)),
                    )
                finally:
                    if hook is not None:
                        hook.remove()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, who raises it
            tokens.put(err)
        finally:
            tokens.put(None)

    # -- score -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], top_logprobs: int = 0
    ) -> list[Scored | PromptRejected]:
        """Per-token log-probs (nats, fp32) of each completion given its prompt, or a `PromptRejected` per pair
        the model cannot score; see `rayflow.llm.types` for the token boundary. `top_logprobs=k` also
        returns the k likeliest tokens at each completion position."""
        pairs = scoring_inputs(self.tokenizer, prompts, completions, self.max_len, self.vocab_size)
        out: list[Scored | PromptRejected | None] = [
            x if isinstance(x, PromptRejected) else None for x in pairs
        ]
        todo = [(i, *x) for i, x in enumerate(pairs) if not isinstance(x, PromptRejected)]
        bs = self.config.batch_size
        with self._lock:
            for start in range(0, len(todo), bs):
                batch = todo[start : start + bs]
                for (i, _, _), scored in zip(
                    batch, self._score_batch([(p, c) for _, p, c in batch], top_logprobs)
                ):
                    out[i] = scored
        return out

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]], top_logprobs: int) -> list[Scored]:
        seqs = [p + c for p, c in pairs]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        out = []
        for row, (p, c) in enumerate(pairs):
            # Position t predicts token t+1, so the completion's tokens are read from len(p)-1 onwards; only
            # that slice is upcast, to keep memory at [len(c), V] for large vocabularies.
            lp = logits[row, len(p) - 1 : len(p) + len(c) - 1].float().log_softmax(-1)
            target = torch.tensor(c, device=self.device, dtype=torch.long)
            values = lp.gather(-1, target[:, None])[:, 0] if c else lp.new_zeros(0)
            top = None
            if top_logprobs:
                best, idx = lp.topk(top_logprobs, dim=-1)
                top = [{self.tokenizer.decode([int(i)]): float(v) for v, i in zip(vs, ids)}
                       for vs, ids in zip(best.tolist(), idx.tolist())]  # fmt: skip
            out.append(Scored(prompt_len=len(p), token_ids=list(c), logprobs=values.tolist(), top=top))
        return out

    def check_health(self) -> None:
        if self.model is None:
            raise EngineError("the engine is closed")

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class OutputPenalty:
    """OpenAI's presence and frequency penalties as a transformers logits processor: a token's logit loses
    `presence` once it has been generated and `frequency` per time it was (vLLM counts output tokens only,
    so the prompt's `width` left-padded positions are skipped)."""

    def __init__(self, width: int, presence: float, frequency: float):
        self.width = width
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros_like(scores)
        generated = input_ids[:, self.width :]
        if generated.shape[1]:
            counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)
