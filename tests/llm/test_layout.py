"""The engine layer's module layout: its modules import each other without a circle, and code outside
`rayflow/llm/` reaches it only through `rayflow.llm`."""

import ast
import importlib
import subprocess
from graphlib import CycleError, TopologicalSorter

from tests.conftest import REPO

LLM = REPO / "rayflow" / "llm"
FILES = {
    "rayflow." + ".".join(p.relative_to(REPO / "rayflow").with_suffix("").parts).removesuffix(".__init__"): p
    for p in LLM.rglob("*.py")
}
SUBMODULES = {m.split(".")[2] for m in FILES if m.count(".") >= 2}


def module_level_imports(module: str) -> set[str]:
    """The rayflow.llm modules `module` imports when it is imported (imports inside functions run later)."""
    found = set()
    for node in ast.parse(FILES[module].read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rayflow.llm"):
            found |= {f"{node.module}.{a.name}" for a in node.names} & FILES.keys() or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rayflow.llm")}
    return found


def test_modules_import_without_a_circle():
    assert {"rayflow.llm.types", "rayflow.llm.prompts", "rayflow.llm.backends.vllm"} <= FILES.keys()
    # An edge to a package means reading its namespace (`from rayflow.llm import X`), which a submodule that
    # the package's __init__ imports must not do.
    graph = {m: module_level_imports(m) for m in FILES}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import circle: {err.args[1]}") from None
    for module in order:  # dependencies first, as Python would import them
        importlib.import_module(module)


def imports_a_submodule(source: str) -> bool:
    """`import rayflow.llm.x`, `from rayflow.llm.x import ...` or `from rayflow.llm import x`, anywhere."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.startswith("rayflow.llm.") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("rayflow.llm."):
                return True
            if node.module == "rayflow.llm" and any(a.name in SUBMODULES for a in node.names):
                return True
    return False


def test_only_the_engine_layer_imports_its_submodules():
    assert imports_a_submodule("def f():\n    from rayflow.llm import (\n        tiny,\n    )\n")
    assert not imports_a_submodule("from rayflow.llm import EngineConfig, PromptRejected")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    outside = [f for f in files if not f.startswith(("rayflow/llm/", "tests/llm/")) and (REPO / f).is_file()]
    assert len(outside) > 50  # the scan really read the repository
    assert [f for f in outside if imports_a_submodule((REPO / f).read_text())] == []
