"""Training on Ray Train + DeepSpeed: the shared loop (`loop`), losses (`losses`), response log-probs
(`logprobs`), training data (`preference_data`), frozen-model log-prob precompute (`precompute`), and the SFT
(`sft`) and preference (`preference`: DPO family, WSPO) jobs built on them. `omnibal/` balances VLM batches."""
