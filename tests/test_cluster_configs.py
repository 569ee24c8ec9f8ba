"""Cluster configs stay loadable: launcher YAML against Ray's own schema, KubeRay manifests against the Ray in use."""

import json
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
RAY_VERSION = metadata.version("ray")


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "local.yaml"])
def test_launcher_configs_match_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(yaml.safe_load((CLUSTER / name).read_text()), schema)


def _ray_pods(doc):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return spec, [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-generate.yaml"])
def test_kuberay_manifests_use_this_ray(name):
    doc = yaml.safe_load((CLUSTER / "k8s" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1"
    spec, containers = _ray_pods(doc)
    assert spec["rayVersion"] == RAY_VERSION
    for c in containers:
        assert c["image"].split(":")[1].startswith(f"{RAY_VERSION}-py311")


def test_rayjob_entrypoint_names_a_shipped_job_and_config():
    doc = yaml.safe_load((CLUSTER / "k8s" / "rayjob-generate.yaml").read_text())
    words = doc["spec"]["entrypoint"].split()
    repo = CLUSTER.parent
    assert (repo / words[1]).is_file()
    assert (repo / words[words.index("--config") + 1]).is_file()
