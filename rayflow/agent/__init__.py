"""TestAgent (arXiv 2410.11507): build a domain benchmark from documents, then probe a model in multi-turn
sessions whose question types a learned policy picks. No code of the paper is public: the state, action and
reward here are rayflow's design (docs/agent.md).

    from rayflow.agent import BenchmarkConfig, SessionStore, build_items, load_policy, run_session
    items, dropped = await build_items(retriever, topics, generate, BenchmarkConfig())     # Benchmark+
    sid = store.create(session_spec(target, items, turns=6, policy="learned", seed=0))
    await run_session(store, sid, target_generate, agent_generate, load_policy(path), SessionConfig())

Modules: `benchmark` (items, two-stage criteria, dedup, static QA), `prompts`, `policy` (state, reward,
LinUCB, baselines), `simulation` (simulated targets), `session` (Assessment+), `store` (SQLAlchemy),
`scores`, `report`; `training` and `evaluation` are the jobs' workflows (they use Ray).
"""

from rayflow.agent.benchmark import (
    BenchmarkConfig,
    Item,
    Point,
    build_items,
    items_from_qa,
    read_items,
    write_items,
)
from rayflow.agent.policy import (
    QUESTION_TYPES,
    FixedPolicy,
    LinUCBPolicy,
    RandomPolicy,
    State,
    load_policy,
    make_policy,
)
from rayflow.agent.report import comparative_report, plot_target, target_report
from rayflow.agent.scores import session_scores
from rayflow.agent.session import SessionConfig, run_session, session_spec, threaded
from rayflow.agent.store import SessionStore

__all__ = [
    "QUESTION_TYPES",
    "BenchmarkConfig",
    "FixedPolicy",
    "Item",
    "LinUCBPolicy",
    "Point",
    "RandomPolicy",
    "SessionConfig",
    "SessionStore",
    "State",
    "build_items",
    "comparative_report",
    "items_from_qa",
    "load_policy",
    "make_policy",
    "plot_target",
    "read_items",
    "run_session",
    "session_scores",
    "session_spec",
    "target_report",
    "threaded",
    "write_items",
]
