"""rayflow's KubeRay manifests, written from one description of the cluster so they cannot drift apart:

    python cluster/k8s/render.py                      # rewrite raycluster.yaml, rayservice.yaml and jobs/*.yaml
    python cluster/k8s/render.py job generate model=/mnt/rayflow/ckpt | kubectl apply -f -   # one job, more overrides

Every pod runs rayflow's image (cluster/Dockerfile, GPU variant) and mounts the `rayflow-shared` volume claim
(pvc.yaml) at /mnt/rayflow: job outputs go to /mnt/rayflow/outputs/<job>, and the model caches (HF_HOME,
RAYFLOW_CACHE) live there too, so workers and later jobs share them. The head takes no work (`num-cpus: 0`);
GPU workers have one GPU each and autoscale. Each job's entrypoint asks its engines and trainers for GPUs
(`stage.gpus_per_actor=1`, `train.use_gpu=true`, ...). The RayService's serveConfigV2 is serve/config.gpu.yaml
with the HTTP proxy listening on 0.0.0.0. tests/deploy/test_manifests.py checks the files equal this output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent
REPO = K8S.parents[1]
RAY_VERSION = "2.60.0"  # = the pinned Ray (pyproject.toml) and cluster/Dockerfile's RAY_VERSION; tests check
IMAGE = f"rayflow:{RAY_VERSION}-gpu"  # what cluster/Dockerfile builds with VARIANT=gpu; push it and set yours
APP_DIR = "/home/ray/rayflow"  # where the image holds the repo (its WORKDIR)
SHARED = "/mnt/rayflow"
CLAIM = "rayflow-shared"

# Every job with a shipped config: (script, config, overrides that put its engines and trainers on GPUs).
JOBS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "prox_refine": ("prox_refine.py", "prox_refine_lm.yaml", ("stage.gpus_per_actor=1",)),
    "prox_annotate": ("prox_annotate.py", "prox_annotate.yaml", ("stage.gpus_per_actor=1",)),
    "train_prox_refiner": ("train_prox_refiner.py", "train_prox_refiner.yaml", ("train.use_gpu=true",)),
    "decontaminate": ("decontaminate.py", "decontaminate.yaml", ()),  # n-gram scan: CPUs only
    "build_index": ("build_index.py", "build_index.yaml", ("stage.gpus_per_actor=1",)),
    "generate": ("generate.py", "generate.yaml", ("stage.gpus_per_actor=1",)),
    "train_sft": ("train_sft.py", "train_sft.yaml", ("train.use_gpu=true",)),
    "train_dpo": ("train_preference.py", "train_dpo.yaml", ("train.use_gpu=true", "precompute.gpus_per_actor=1")),
    "train_judge": ("train_judge.py", "train_judge.yaml", ("sft_train.use_gpu=true",)),
    "train_vlm": ("train_vlm.py", "train_vlm.yaml", ("train.use_gpu=true",)),
    "sweep_beta": ("sweep_beta.py", "sweep_beta.yaml",
                   ("train.use_gpu=true", "precompute.gpus_per_actor=1", "evaluation.num_gpus=1")),
    "eval_safety": ("eval_safety.py", "eval_safety.yaml", ("stage.gpus_per_actor=1",)),
    "eval_rag": ("eval_rag.py", "eval_rag.yaml", ("stage.gpus_per_actor=1",)),
    "make_conflicts": ("make_conflicts.py", "make_conflicts.yaml", ("stage.gpus_per_actor=1",)),
    "eval_conflicts": ("eval_conflicts.py", "eval_conflicts.yaml", ("stage.gpus_per_actor=1",)),
    "train_agent_policy": ("train_agent_policy.py", "train_agent_policy.yaml", ()),  # a small policy: CPUs
    "agent_eval": ("agent_eval.py", "agent_eval.yaml", ("stage.gpus_per_actor=1",)),
}  # fmt: skip

HEAD = {"cpu": "4", "memory": "16Gi"}
GPU_WORKER = {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
CPU_WORKER = {"cpu": "8", "memory": "32Gi"}


def container(name: str, resources: dict[str, str], ports: bool = False) -> dict:
    """A Ray container: the image, the shared volume, shared memory for the object store and NCCL, and equal
    requests and limits (GPUs must be; the rest keeps the pod in the Guaranteed class)."""
    spec = {
        "name": name,
        "image": IMAGE,
        "env": [{"name": "HF_HOME", "value": f"{SHARED}/hf"}, {"name": "RAYFLOW_CACHE", "value": f"{SHARED}/cache"}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [{"name": "shared", "mountPath": SHARED}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }  # fmt: skip
    if ports:
        spec["ports"] = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                         {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"}]  # fmt: skip
    return spec


def pod(name: str, resources: dict[str, str], ports: bool = False) -> dict:
    volumes = [{"name": "shared", "persistentVolumeClaim": {"claimName": CLAIM}},
               {"name": "dshm", "emptyDir": {"medium": "Memory"}}]  # fmt: skip
    return {"spec": {"containers": [container(name, resources, ports)], "volumes": volumes}}


def cluster_spec(gpu_workers: bool = True, max_workers: int = 4) -> dict:
    """The RayCluster spec: a head that takes no work (`num-cpus: 0`) and one autoscaling worker group."""
    group, resources = ("gpu", GPU_WORKER) if gpu_workers else ("cpu", CPU_WORKER)
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": pod("ray-head", HEAD, ports=True),
        },
        "workerGroupSpecs": [{"groupName": group, "replicas": 1, "minReplicas": 0, "maxReplicas": max_workers,
                              "rayStartParams": {}, "template": pod("ray-worker", resources)}],
    }  # fmt: skip


def raycluster() -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rayflow"},
        "spec": cluster_spec(),
    }


def rayjob(name: str, extra: tuple[str, ...] = ()) -> dict:
    """A throwaway cluster that runs one job with its shipped config, writes to the shared volume, and goes."""
    script, config, gpu = JOBS[name]
    words = ["python", f"jobs/{script}", "--config", f"configs/{config}", *gpu,
             f"output_dir={SHARED}/outputs/{name}", *extra]  # fmt: skip
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"rayflow-{name.replace('_', '-')}"},
        "spec": {
            "entrypoint": " ".join(words),
            # The code is in the image: the job runs in (and its workers import from) the repo's copy there.
            "runtimeEnvYAML": f"working_dir: {APP_DIR}\n",
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": cluster_spec(gpu_workers=bool(gpu)),
        },
    }


def rayservice() -> dict:
    """Every Serve application (serve/config.gpu.yaml) on a cluster; the proxy listens on all interfaces."""
    serve_config = yaml.safe_load((REPO / "serve" / "config.gpu.yaml").read_text())
    serve_config["http_options"]["host"] = "0.0.0.0"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "rayflow"},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": cluster_spec(),
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, runtimeEnvYAML) as literal blocks, readable as the YAML they hold."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def to_yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)


def dump(doc: dict, header: str) -> str:
    return f"# {header}\n# Written by cluster/k8s/render.py: edit that, then rerun it.\n" + to_yaml(doc)


def manifests() -> dict[Path, str]:
    """Every manifest file under cluster/k8s and its content."""
    files = {
        K8S / "raycluster.yaml": dump(raycluster(), "A long-lived cluster for `ray job submit` and Serve."),
        K8S / "rayservice.yaml": dump(rayservice(), "Every Serve application of serve/config.gpu.yaml."),
    }
    for name in JOBS:
        files[K8S / "jobs" / f"{name}.yaml"] = dump(
            rayjob(name), f"kubectl apply -f cluster/k8s/pvc.yaml -f cluster/k8s/jobs/{name}.yaml"
        )
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=["job"], help="print one job's RayJob instead")
    parser.add_argument("name", nargs="?", choices=sorted(JOBS))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides for the job")
    args = parser.parse_args(argv)
    if args.what == "job":
        if args.name is None:
            parser.error("job: name which job")
        sys.stdout.write(to_yaml(rayjob(args.name, tuple(args.overrides))))
        return
    for path, text in manifests().items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
