"""The image and the KubeRay manifests, checked where Docker and Kubernetes are not available: the Dockerfile builds
on Ray's image of the pinned Ray and installs as `make setup` does; every manifest under cluster/k8s validates
against KubeRay's CRD schemas (the parts used, copied into kuberay_v1_schema.yaml), equals what
cluster/k8s/render.py writes, runs that image with bounded resources and a head free of work, and each RayJob's
entrypoint is a valid invocation of its job that asks for GPUs; the RayService serves serve/config.gpu.yaml."""

import ast
import importlib
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from rayflow.config import load_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "cluster" / "k8s"
sys.path.insert(0, str(K8S))
import render  # cluster/k8s/render.py

RAY_VERSION = metadata.version("ray")
SCHEMAS = yaml.safe_load((Path(__file__).parent / "kuberay_v1_schema.yaml").read_text())
MANIFESTS = sorted(K8S.glob("*.yaml")) + sorted((K8S / "jobs").glob("*.yaml"))
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}


def _load(path):
    return yaml.safe_load(path.read_text())


def _cluster_spec(doc):
    return doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]


def _groups(doc):
    spec = _cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


# -- the image ---------------------------------------------------------------------------------------------------


def _dockerfile():
    text = (REPO / "cluster" / "Dockerfile").read_text()
    return re.sub(r"\\\n\s*", " ", text)  # continuation lines joined


def test_image_builds_on_rays_image_of_the_pinned_ray():
    text = _dockerfile()
    assert f"ARG RAY_VERSION={RAY_VERSION}" in text
    bases = re.findall(r"^FROM (\S+) AS (\S+)", text, re.MULTILINE)
    assert bases == [("rayproject/ray:${RAY_VERSION}-py311", "base-cpu"),
                     ("rayproject/ray:${RAY_VERSION}-py311-gpu", "base-gpu")]  # fmt: skip
    assert re.search(r"^FROM base-\$\{VARIANT\}$", text, re.MULTILINE)
    pin = next(d for d in _pyproject_dependencies() if d.startswith("ray["))
    assert re.search(rf">={re.escape(RAY_VERSION.rsplit('.', 1)[0])}\b", pin), (
        pin
    )  # pyproject pins this minor
    assert render.RAY_VERSION == RAY_VERSION and render.IMAGE.startswith(f"rayflow:{RAY_VERSION}-")


def _pyproject_dependencies():
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def _pip_lines(text):
    return [shlex.split(m) for m in re.findall(r"pip (?:un)?install [^;&\n]*", text)]


def test_image_installs_as_make_setup_does():
    """Same constraints, same editable install of the same CPU extra (the image leaves out `dev`), and the same
    torchvision/torchaudio/torchcodec removal; only quiet/cache flags and PyTorch's CPU index differ."""
    makefile = (REPO / "Makefile").read_text().replace("$(PY) -m ", "")
    make_install, make_uninstall = _pip_lines(makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0])
    docker_install, docker_uninstall, gpu_install = _pip_lines(_dockerfile())

    def normal(words, drop_extra=None):
        words = [w for w in words if w not in ("--quiet", "--no-cache-dir")]
        if "--extra-index-url" in words:
            i = words.index("--extra-index-url")
            assert words[i + 1] == "https://download.pytorch.org/whl/cpu"
            del words[i : i + 2]
        return [w.replace(",dev]", "]") for w in words]

    assert normal(docker_install) == normal(make_install) == ["pip", "install", "-c", "constraints/cpu.txt", "-e", ".[cpu]"]  # fmt: skip
    assert sorted(normal(docker_uninstall)) == sorted(normal(make_uninstall))
    assert normal(gpu_install) == ["pip", "install", "-e", ".[gpu]"]


def test_build_context_leaves_out_the_venv_and_outputs():
    ignored = (REPO / "cluster" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "outputs", ".cache"} <= set(ignored)


# -- the manifests -----------------------------------------------------------------------------------------------


def test_manifests_are_what_render_writes():
    written = render.manifests()
    stale = [
        str(p.relative_to(REPO)) for p, text in written.items() if not p.is_file() or p.read_text() != text
    ]
    assert not stale, f"rerun `python cluster/k8s/render.py`: {stale}"
    extra = {p for p in (K8S / "jobs").glob("*.yaml")} - set(written)
    assert not extra, f"RayJobs render.py does not write: {sorted(map(str, extra))}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_kuberays_crds(path):
    doc = _load(path)
    schema = {**SCHEMAS[doc["kind"]], "$defs": SCHEMAS["$defs"]}
    jsonschema.validate(doc, schema)
    if doc["kind"] not in RAY_KINDS:
        return
    assert _cluster_spec(doc)["rayVersion"] == RAY_VERSION
    head = _cluster_spec(doc)["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head schedules no tasks or actors
    for name, group in _groups(doc):
        pod = group["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
        for c in pod["containers"]:
            assert c["image"] == render.IMAGE, (name, c["image"])
            res = c["resources"]
            assert res["requests"] == res["limits"] and {"cpu", "memory"} <= set(res["limits"]), name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims.get(mounts.get("/mnt/rayflow")) == "rayflow-shared", name


def _job_config_class(script):
    tree = ast.parse((REPO / "jobs" / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module.startswith("rayflow."):
            name = next((a.name for a in node.names if a.name.endswith("Config")), None)
            if name:
                return getattr(importlib.import_module(node.module), name)
    raise AssertionError(f"jobs/{script} imports no Config class")


def test_every_job_has_a_rayjob():
    scripts = {script for script, _, _ in render.JOBS.values()}
    without_config = {"eval_prox_refiner.py"}  # no shipped config: its inputs come from the user
    missing = {p.name for p in (REPO / "jobs").glob("*.py")} - scripts - without_config
    assert not missing, f"add these jobs to JOBS in cluster/k8s/render.py and rerun it: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(render.JOBS))
def test_rayjob_entrypoint_runs_its_job_on_gpus(name):
    doc = _load(K8S / "jobs" / f"{name}.yaml")
    words = shlex.split(doc["spec"]["entrypoint"])
    assert words[:2] == ["python", f"jobs/{render.JOBS[name][0]}"] and words[2] == "--config"
    cls = _job_config_class(render.JOBS[name][0])
    cfg = load_config(cls, REPO / words[3], words[4:])  # every override is a valid key of the job
    assert cfg.output_dir == f"/mnt/rayflow/outputs/{name}"
    gpus = [w for w in words[4:] if "gpu" in w]
    assert gpus == list(render.JOBS[name][2])
    workers = _cluster_spec(doc)["workerGroupSpecs"]
    has_gpu = any("nvidia.com/gpu" in c["resources"]["limits"] for w in workers for c in w["template"]["spec"]["containers"])  # fmt: skip
    assert has_gpu == bool(gpus)
    assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"]) == {"working_dir": render.APP_DIR}


def test_rayservice_serves_the_gpu_profile_on_all_interfaces():
    doc = _load(K8S / "rayservice.yaml")
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    profile = yaml.safe_load((REPO / "serve" / "config.gpu.yaml").read_text())
    assert served["http_options"]["host"] == "0.0.0.0" and profile["http_options"]["host"] == "127.0.0.1"
    served["http_options"]["host"] = profile["http_options"]["host"]
    assert served == profile
    ports = [p["containerPort"] for c in _cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"] for p in c["ports"]]  # fmt: skip
    assert 8000 in ports and 8265 in ports


def test_render_prints_one_job_with_more_overrides(capsys):
    render.main(["job", "generate", "engine.model=/mnt/rayflow/models/ckpt"])
    doc = yaml.safe_load(capsys.readouterr().out)
    words = shlex.split(doc["spec"]["entrypoint"])
    assert words[-1] == "engine.model=/mnt/rayflow/models/ckpt"
    cfg = load_config(_job_config_class("generate.py"), REPO / words[3], words[4:])
    assert cfg.engine.model == "/mnt/rayflow/models/ckpt" and cfg.stage.gpus_per_actor == 1
