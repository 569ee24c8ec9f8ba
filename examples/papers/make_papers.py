"""Build examples/papers/: research-abstract-like documents and a question-answer set over them.

    python examples/papers/make_papers.py          # rewrites papers.jsonl and qa.jsonl, deterministically

papers.jsonl: one paper per line, `{doc_id, text, metadata: {title, field, year, url, source}}`: an invented
method (a unique made-up name) for a task of its field, its mechanism, a headline result on a benchmark, an
ablation and a finding; a third of the papers add a second-experiment paragraph, so they span two chunks. The
text is written for rayflow from templates; the methods, benchmarks and numbers are fictional.

qa.jsonl: `{query_id, query, gt_answer, gold_doc_ids, gold_chunk_ids}`, the fields RAGChecker reads
(query_id, query, gt_answer) plus the chunks holding the answer under the default chunking
(`rayflow.retrieval.ChunkConfig()`: 128 word tokens, 16 overlap), for retrieval recall. Questions either name
the method (lexical) or describe it by field, task and mechanism without its name (semantic).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from rayflow.retrieval import ChunkConfig, Document, chunk_document

N_PAPERS = 300
N_QUESTIONS = 80
SOURCES = ("arxiv", "openreview", "acl-anthology", "journal")

# field -> tasks, benchmarks, metric, mechanisms (each a phrase completing "a method that ...")
FIELDS = {
    "nlp": (
        [
            "open-domain question answering",
            "machine translation of low-resource languages",
            "abstractive summarisation of long reports",
            "named entity recognition in clinical notes",
            "detecting sarcasm in product reviews",
            "dialogue state tracking",
        ],
        ["WikiQuest", "FloresLite", "GovDocs-Sum", "ClinNER-7", "ReviewIrony", "MultiTurn-22"],
        "F1",
        [
            "rewrites each question into sub-questions before retrieval",
            "shares a vocabulary across related languages through romanised subwords",
            "plans the summary as a list of salient facts before writing it",
            "tags entities with a span classifier trained on synthetic notes",
            "contrasts the literal and the implied sentiment of each sentence",
            "keeps a slot memory that is updated only when the user confirms a value",
        ],
    ),
    "cv": (
        [
            "semantic segmentation of aerial images",
            "tracking pedestrians in crowded scenes",
            "depth estimation from a single image",
            "detecting defects on printed circuit boards",
            "recognising sign language from video",
            "reconstructing 3D shapes from sketches",
        ],
        ["SkyParcel", "CrowdTrack-5", "MonoDepth-Bench", "PCB-Defect", "SignClips", "Sketch2Mesh"],
        "mIoU",
        [
            "mixes convolutional features with a low-resolution attention map",
            "re-identifies people with an appearance memory that decays over time",
            "predicts depth from the blur gradient between neighbouring pixels",
            "compares each board with a synthesised defect-free reference",
            "pools hand keypoints over sliding windows of frames",
            "lifts strokes into a signed distance field with a small implicit network",
        ],
    ),
    "ml": (
        [
            "training with noisy labels",
            "calibrating classifier confidence",
            "continual learning without replay",
            "hyperparameter search under a fixed budget",
            "learning from tabular data with missing values",
            "federated training across hospitals",
        ],
        ["NoisyCIFAR-40", "CalibSuite", "SplitStream", "BudgetHPO", "TabMiss-12", "FedHealth"],
        "accuracy",
        [
            "reweights each example by the agreement of two networks trained on disjoint halves",
            "fits a temperature per class on a held-out split",
            "freezes the directions in weight space that earlier tasks rely on",
            "stops unpromising trials early using learning-curve extrapolation",
            "learns an embedding for each missingness pattern",
            "averages client updates weighted by their validation loss",
        ],
    ),
    "ir": (
        [
            "passage retrieval for scientific questions",
            "product search with typos",
            "legal case retrieval",
            "conversational search",
            "cross-lingual document retrieval",
            "retrieval-augmented generation over code",
        ],
        ["SciPassages", "ShopTypo", "CaseLawRet", "ConvSearch-3", "XLing-Docs", "CodeRAG-Eval"],
        "recall@10",
        [
            "fuses sparse and dense rankings with reciprocal rank fusion",
            "corrects queries with a character-level noisy channel model",
            "indexes the citation graph of each case alongside its text",
            "rewrites the latest turn into a standalone query",
            "aligns multilingual embeddings with a small parallel dictionary",
            "chunks repositories along function boundaries before embedding",
        ],
    ),
    "robotics": (
        [
            "grasping transparent objects",
            "legged locomotion on ice",
            "navigation in unmapped buildings",
            "assembling furniture from instructions",
            "collision avoidance for drone swarms",
            "surgical needle insertion",
        ],
        ["ClearGrasp-Sim", "IceWalk", "FloorPlan-Nav", "IKEA-Steps", "SwarmSafe", "NeedleSim"],
        "success rate",
        [
            "combines tactile sensing with a depth completion network",
            "adapts its gait with a friction estimate from foot slip",
            "builds a topological map from door and corridor detections",
            "parses instruction diagrams into a sequence of subgoals",
            "shares predicted trajectories between neighbours over a mesh radio",
            "models tissue deformation with a learned finite-element surrogate",
        ],
    ),
    "systems": (
        [
            "serving large language models",
            "scheduling deep learning jobs on shared clusters",
            "compressing gradients in distributed training",
            "caching embeddings for vector search",
            "checkpointing long training runs",
            "autoscaling stream processing pipelines",
        ],
        ["ServeBench", "ClusterTrace-19", "GradComm", "VecCache", "CkptStress", "StreamScale"],
        "throughput gain",
        [
            "batches requests continuously and pages the attention cache",
            "packs jobs by predicted memory use instead of requested GPUs",
            "sends only the top gradient coordinates with error feedback",
            "keeps hot embeddings in a learned admission cache",
            "writes checkpoints asynchronously from a snapshot in host memory",
            "forecasts load from the input queue length a minute ahead",
        ],
    ),
    "bio": (
        [
            "predicting protein stability",
            "calling variants from long reads",
            "classifying cell types from single-cell RNA",
            "predicting drug-target binding",
            "segmenting nuclei in histology slides",
            "forecasting epidemic spread",
        ],
        ["StabiliSet", "LongReadVar", "CellAtlas-9", "BindDB-Lite", "NucleiSeg", "EpiForecast"],
        "AUROC",
        [
            "embeds each residue with a language model of protein families",
            "realigns reads around candidate indels with a pair hidden Markov model",
            "transfers labels from a reference atlas with optimal transport",
            "scores poses with a graph network over protein-ligand contacts",
            "predicts nucleus boundaries and centres as two output maps",
            "couples a compartmental model with mobility data",
        ],
    ),
    "hci": (
        [
            "text entry on smartwatches",
            "accessible charts for blind readers",
            "detecting user frustration",
            "collaborative writing with AI assistants",
            "gesture input in virtual reality",
            "notification timing on phones",
        ],
        ["WatchType", "ChartSense", "FrustraLog", "CoWrite-Study", "VR-Gestures", "NotifyTime"],
        "task completion rate",
        [
            "predicts words from imprecise taps with a spatial language model",
            "describes charts as sonified trends with spoken summaries",
            "reads mouse dynamics and typing pauses",
            "suggests edits only when the writer pauses",
            "recognises pinch gestures from wrist-worn inertial sensors",
            "delays notifications until a natural break in phone use",
        ],
    ),
}
CHALLENGES = [
    "labelled data is scarce",
    "errors compound over long inputs",
    "existing methods ignore structure in the data",
    "inputs are noisy and incomplete",
    "strong baselines are expensive to run",
    "conditions shift between training and deployment",
]
COMPONENTS = [
    "memory module",
    "auxiliary loss",
    "pre-training stage",
    "data augmentation",
    "confidence filter",
    "curriculum",
]
FINDINGS = [
    "gains are largest on the hardest tenth of the examples",
    "the method needs less than half the training data of the baseline to match it",
    "performance is stable across three random seeds",
    "most remaining errors come from ambiguous annotations",
    "the approach transfers to a second benchmark without tuning",
    "inference cost grows linearly with input size",
]
SYLLABLES = [
    "kor",
    "va",
    "tre",
    "lix",
    "mon",
    "da",
    "sel",
    "pha",
    "ri",
    "zen",
    "qua",
    "lo",
    "bri",
    "ston",
    "nu",
    "vel",
    "ta",
    "gra",
    "mi",
    "dor",
]


def method_names(rng: random.Random, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize())
    return sorted(names)


def make_paper(i: int, name: str, rng: random.Random) -> tuple[Document, dict]:
    field = list(FIELDS)[i % len(FIELDS)]
    tasks, benches, metric, mechanisms = FIELDS[field]
    t = rng.randrange(len(tasks))
    mechanism = rng.choice(mechanisms)
    year = rng.randint(2015, 2024)
    bench = benches[t]
    value = round(rng.uniform(55, 95), 1)
    delta = round(rng.uniform(0.8, 9.5), 1)
    component, drop = rng.choice(COMPONENTS), round(rng.uniform(0.5, 6.0), 1)
    finding = rng.choice(FINDINGS)
    title = f"{name} for {tasks[t]}"
    result = (
        f"On the {bench} benchmark, {name} reaches {value} {metric}, "
        f"{delta} points above the strongest baseline."
    )
    sentences = [
        f"{tasks[t].capitalize()} remains difficult because {rng.choice(CHALLENGES)}.",
        f"We introduce {name}, a method that {mechanism}.",
        "The idea is simple to implement and adds little overhead at inference time.",
        result,
        f"An ablation shows that removing the {component} lowers {metric} by {drop} points.",
        f"We also find that {finding}.",
    ]
    second = None
    if i % 3 == 0:
        other = benches[(t + 1) % len(benches)]
        value2 = round(rng.uniform(50, 90), 1)
        second = (
            f"In a second experiment on the {other} benchmark, {name} reaches {value2} {metric}. "
            f"There the {component} matters less, and the largest gain comes from longer training."
        )
        sentences += [
            (
                f"We compare against {rng.randint(4, 9)} published systems under the same compute budget, "
                f"reusing their released code and hyperparameters where available, and report the mean of three runs "
                f"with standard deviations in the appendix."
            ),
            "We release code, trained checkpoints and the evaluation scripts to make the comparison reproducible.",
            "The rest of the paper describes the method, the experimental setup and a discussion of limitations.",
            second,
        ]
    text = " ".join(sentences)
    doc = Document(
        doc_id=f"paper-{i:04d}",
        text=text,
        metadata={
            "title": title,
            "field": field,
            "year": year,
            "url": f"https://papers.example.org/{year}/{i:04d}",
            "source": SOURCES[i % len(SOURCES)],
        },
    )
    facts = {
        "name": name,
        "field": field,
        "year": year,
        "task": tasks[t],
        "mechanism": mechanism,
        "bench": bench,
        "metric": metric,
        "value": value,
        "delta": delta,
        "result": result,
        "second": second,
    }
    return doc, facts


def gold_chunks(doc: Document, sentence: str) -> list[str]:
    """Chunks (default chunking) overlapping the sentence holding the answer."""
    start = doc.text.index(sentence)
    end = start + len(sentence)
    return [c.chunk_id for c in chunk_document(doc, ChunkConfig()) if c.start < end and c.end > start]


def make_question(k: int, doc: Document, f: dict, rng: random.Random) -> dict:
    kind = k % 4
    if kind == 0:
        query = f"What {f['metric']} does {f['name']} reach on the {f['bench']} benchmark?"
        answer, sentence = (
            f"{f['name']} reaches {f['value']} {f['metric']} on {f['bench']}, {f['delta']} points above the strongest baseline.",
            f["result"],
        )
    elif kind == 1:
        query = f"Which method for {f['task']} {f['mechanism']}, and how well does it do on {f['bench']}?"
        answer, sentence = (
            f"{f['name']}, which reaches {f['value']} {f['metric']} on {f['bench']}.",
            f["result"],
        )
    elif kind == 2:
        query = f"In {f['field']} research from {f['year']}, what method was proposed for {f['task']} and what does it do?"
        answer = f"{f['name']}, a method that {f['mechanism']}."
        sentence = f"We introduce {f['name']}, a method that {f['mechanism']}."
    else:
        if f["second"] is None:
            return make_question(0, doc, f, rng)
        sentence = f["second"].split(". ")[0] + "."
        other = sentence.split("the ")[1].split(" benchmark")[0]
        query = f"How does {f['name']} perform in its second experiment, on {other}?"
        answer = sentence.replace("In a second experiment on", "On")
    return {
        "query_id": f"q{k:03d}",
        "query": query,
        "gt_answer": answer,
        "gold_doc_ids": [doc.doc_id],
        "gold_chunk_ids": gold_chunks(doc, sentence),
    }


def main() -> None:
    rng = random.Random(20261204)
    names = method_names(rng, N_PAPERS)
    rng.shuffle(names)
    papers = [make_paper(i, names[i], rng) for i in range(N_PAPERS)]
    # Semantic questions (kinds 1, 2) must describe one paper only: skip papers sharing task + mechanism.
    combos: dict[tuple[str, str], int] = {}
    for _, f in papers:
        combos[(f["task"], f["mechanism"])] = combos.get((f["task"], f["mechanism"]), 0) + 1
    chosen = [p for p in papers if combos[(p[1]["task"], p[1]["mechanism"])] == 1]
    # Kind 3 needs a second experiment: order so every fourth question falls on a two-paragraph paper.
    with_second = [p for p in chosen if p[1]["second"]]
    without = [p for p in chosen if not p[1]["second"]]
    questions = []
    for k in range(N_QUESTIONS):
        pool = with_second if k % 4 == 3 else without
        doc, facts = pool.pop(rng.randrange(len(pool)))
        questions.append(make_question(k, doc, facts, rng))
    with open(HERE / "papers.jsonl", "w") as out:
        for doc, _ in papers:
            out.write(json.dumps(doc.model_dump()) + "\n")
    with open(HERE / "qa.jsonl", "w") as out:
        out.writelines(json.dumps(q) + "\n" for q in questions)
    print(f"wrote {len(papers)} papers and {len(questions)} questions to {HERE}")


if __name__ == "__main__":
    main()
