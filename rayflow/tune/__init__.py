"""Ray Tune sweeps over preference training: the DPO β sweep (`sweep`), its post-sweep evaluation stage
(`evaluation`, with degeneration checks in `degeneration` and the pairwise LLM judge of
`rayflow.eval.pairwise`) and the report that picks a β (`report`)."""
