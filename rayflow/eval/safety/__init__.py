"""Safety judges as plain Python: four protocols (Safety-J, ShieldLM, Llama Guard, WildGuard), their prompt
builders and parsers, critique meta-evaluation by atomic information units, and label-level metrics.

    from rayflow.eval.safety import parse_judgement
    j = parse_judgement("safetyj", "[Answer] unsafe\\n[Analysis] It explains how to ...")
    j.label, j.categories, j.critique, j.parse_ok        # "unsafe", [], "It explains how to ...", True

The Serve app (`serve/judge.py`) and the jobs (`jobs/eval_safety.py`, `jobs/train_judge.py`) wrap this.
"""

from rayflow.eval.safety.judgement import LABELS, Judgement
from rayflow.eval.safety.protocols import PROTOCOLS, SCHEMES, build_prompt, get_protocol, parse_judgement

__all__ = ["LABELS", "PROTOCOLS", "SCHEMES", "Judgement", "build_prompt", "get_protocol", "parse_judgement"]
