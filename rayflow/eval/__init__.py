"""Evaluation logic as plain Python: judge protocols, parsers and meta-evaluation (`rayflow.eval.safety`).

Nothing here imports Ray at module level; Serve apps (`serve/`) and jobs (`jobs/eval_*.py`) wrap it.
"""
