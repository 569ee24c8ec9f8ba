"""Ray Tune sweeps over preference training: the DPO β sweep (`sweep`), its post-sweep evaluation stage
(`evaluation`, with the pairwise LLM judge in `judge` and degeneration checks in `degeneration`) and the
report that picks a β (`report`)."""
