"""Decontamination: evaluation sets against a corpus with the published n-gram rules, at corpus scale on Ray
Data, with a model-based check (Min-K% Prob) and an evidence database in CONDA's CSV format.

    from rayflow.data.decontam import check_example, EvidenceDB
    check_example("question text ...", ["doc one", "doc two"], rule="palm")   # -> Verdict(dirty, score, bucket)
    EvidenceDB("sqlite:////abs/ev.db").import_conda_csv("conda.csv")

Modules: `rules` (tokens, the gpt3/palm/coverage rules, `check_example`), `index` (exact n-gram maps behind an
rbloom prefilter, the vectorised scan), `clean` (GPT-3's corpus-side filter), `evalsets` (reading evaluation
sets), `minkprob` (Min-K% through the engine layer), `evidence` (the database), `pipeline` (the Ray Data job),
`http` (the `/v1/contamination` route). See docs/decontamination.md.
"""

from rayflow.data.decontam.evidence import CONDA_HEADER, CondaFormatError, EvidenceDB
from rayflow.data.decontam.rules import (
    RULES,
    NormalizeConfig,
    RulesConfig,
    Verdict,
    check_example,
    tokenize,
    verdict,
)

__all__ = [
    "CONDA_HEADER",
    "RULES",
    "CondaFormatError",
    "EvidenceDB",
    "NormalizeConfig",
    "RulesConfig",
    "Verdict",
    "check_example",
    "tokenize",
    "verdict",
]
