"""The cluster launcher configs (`ray up cluster/*.yaml`) pass Ray's own schema and config preparation, do not
copy the local .venv, run Ray's image of the pinned Ray on a pinned current machine image, and install rayflow
as cluster/Dockerfile does."""

import copy
import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
LAUNCHERS = ["aws-gpu.yaml", "local.yaml"]


def _load(name):
    return yaml.safe_load((REPO / "cluster" / name).read_text())


def _pip_lines(text):
    return [
        [w for w in shlex.split(m) if w != "--no-cache-dir"]
        for m in re.findall(r"pip (?:un)?install [^;&\n]*", text)
    ]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_schema_and_preparation(name):
    config = _load(name)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` runs before anything starts ...
    validate_config(prepared)  # ... and checks next
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert all("max_workers" in t for t in prepared["available_node_types"].values())
    assert prepared["docker"]["image"] == f"rayproject/ray:{metadata.version('ray')}-py311" + ("-gpu" if "gpu" in name else "")  # fmt: skip


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_does_not_copy_the_venv(name):
    config = _load(name)
    assert ".gitignore" in config["rsync_filter"]
    ignored = (REPO / ".gitignore").read_text().split()
    assert {".venv/", "outputs/", ".cache/"} <= set(ignored)


@pytest.mark.parametrize(("name", "variant"), [("aws-gpu.yaml", "gpu"), ("local.yaml", "cpu")])
def test_launcher_installs_as_the_image_does(name, variant):
    dockerfile = re.sub(r"\\\n\s*", " ", (REPO / "cluster" / "Dockerfile").read_text())
    cpu_install, cpu_uninstall, gpu_install = _pip_lines(dockerfile)
    expected = [gpu_install] if variant == "gpu" else [cpu_install, cpu_uninstall]
    assert _pip_lines("\n".join(_load(name)["setup_commands"])) == expected


def test_gpu_nodes_run_a_pinned_current_machine_image():
    config = _load("aws-gpu.yaml")
    # Ray's default AMIs (an Ubuntu 18.04 Deep Learning AMI), read from its source: importing it needs boto3.
    stale = set(
        re.findall(
            r"ami-[0-9a-f]+", (Path(ray.__file__).parent / "autoscaler/_private/aws/config.py").read_text()
        )
    )
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    # One release for every node, named by its ID (an SSM `resolve:` or `latest` would move under the cluster).
    assert len(images) == 1 and re.fullmatch(r"ami-[0-9a-f]{17}", image := images.pop()), images
    assert image not in stale
    # AMI IDs are per region: the file names the region the pinned ID belongs to and the release it is.
    assert config["provider"]["region"] == "us-east-1"
    assert "Ubuntu 22.04" in (REPO / "cluster" / "aws-gpu.yaml").read_text()
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
