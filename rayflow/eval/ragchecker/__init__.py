"""RAGChecker's claim-level diagnosis of RAG answers: metrics, claim extraction and checking, the eval_rag job.

    from rayflow.eval.ragchecker import compute_metrics
    compute_metrics(results)   # {overall_metrics, retriever_metrics, generator_metrics}, percentages

Modules: `metrics` (the 11 metrics from labels; pure Python), `prompts` (rayflow's extraction and checking
prompts and their parsers), `checking` (extractors, LLM and NLI checkers, the label cache, `RAGEvaluator`),
`tiny_nli` (an offline tiny NLI classifier), `items` (reading and validating RAGChecker items), `workflow`
(eval_rag on Ray Data). Importing this package loads neither torch nor Ray.
"""

from rayflow.eval.ragchecker.metrics import (
    ALL_METRICS,
    LABEL_FIELDS,
    METRIC_GROUPS,
    aggregate,
    compute_metrics,
    item_metrics,
    required_labels,
    select_metrics,
)

__all__ = [
    "ALL_METRICS",
    "LABEL_FIELDS",
    "METRIC_GROUPS",
    "aggregate",
    "compute_metrics",
    "item_metrics",
    "required_labels",
    "select_metrics",
]
