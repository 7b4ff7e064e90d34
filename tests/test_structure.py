"""The layout's boundaries, kept by tests: vLLM is imported in one module only; planning and the model files
import neither torch nor vLLM (the plan CLI runs on a laptop, the bake layer runs before the worker's code is
in the image); docs/development.md names every module; the package graph has no circles; the image ships
only the runtime; the environment is read in config/ and written in one module; no long functions."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MODEL_CONFIGS, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()
PRODUCT_CODE = [ROOT / "handler.py", *sorted((ROOT / "config").rglob("*.py")), *sorted((ROOT / "worker").rglob("*.py"))]

# Runs `-m MODULE ARGS` with torch and vLLM made unimportable, as on a laptop or in the image's bake layer.
BLOCK_HEAVY_IMPORTS = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "vllm", "transformers"):
            raise ImportError(f"{name} is blocked: this code must run without it")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def imported_modules(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PRODUCT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_vllm_is_imported_only_through_vllm_api(path):
    if path == ROOT / "worker" / "vllm_api.py":
        return
    vllm_imports = sorted(m for m in imported_modules(path) if m == "vllm" or m.startswith("vllm."))
    assert not vllm_imports, f"{path.relative_to(ROOT)} imports {vllm_imports}: add the names to worker/vllm_api.py"


SERVING_PACKAGES = ("engine", "startup", "jobs", "requests", "routes", "media", "transports")


def is_serving_layer(module: str) -> bool:
    parts = module.split(".")
    return module == "worker.vllm_api" or (parts[0] == "worker" and len(parts) > 1 and parts[1] in SERVING_PACKAGES)


@pytest.mark.parametrize("package", ["worker/model_files", "worker/parallel"])
def test_pure_packages_import_neither_torch_nor_the_serving_layer(package):
    # Module level: worker/parallel/gpus.py may fall back to torch on a pod whose NVML cannot be read.
    for path in sorted((ROOT / package).rglob("*.py")):
        heavy = sorted(m for m in imported_modules(path, top_level_only=True) if m.split(".")[0] in ("torch", "vllm", "transformers")
                       or is_serving_layer(m))
        assert not heavy, f"{path.relative_to(ROOT)} imports {heavy}"


def test_plan_cli_runs_without_torch_or_vllm():
    model = MODEL_CONFIGS / "meta-llama--Meta-Llama-3-8B.json"
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY_IMPORTS, "worker.plan", str(model), "--gpus", "8", "--gpu-memory", "80"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Recommended: TENSOR_PARALLEL_SIZE=8" in result.stdout


def test_bake_layer_runs_with_only_the_files_copied_before_it(tmp_path):
    """The Dockerfile copies a few paths before `--bake` runs: those alone must import and run it."""
    bake_at = DOCKERFILE.index("python -m worker.model_files.download --bake")
    copied = [line.split()[:-1] for line in re.findall(r"^COPY (?!--)(.+)$", DOCKERFILE[:bake_at], re.MULTILINE)]
    sources = [source for line in copied for source in line if not source.startswith("requirements")
               and source != "constraints.txt"]
    assert sources, "no COPY before the bake step"
    for source in sources:
        target = tmp_path / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    # A local folder: the bake step resolves it without the hub, through the same code as a hub id.
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY_IMPORTS, "worker.model_files.download"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "MODEL_NAME": str(model), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(model)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_development_page_names_every_module():
    table = _script("layout_table")
    page = table.PAGE.read_text()
    current = page.split(table.START, 1)[1].split(table.END, 1)[0].strip()
    assert current == table.render_table(), "docs/development.md layout is stale: run python scripts/layout_table.py --write"
    missing = [str(p.relative_to(ROOT)) for p in PRODUCT_CODE if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in current]
    assert not missing


def test_the_readme_is_a_front_page_with_the_docs_beside_it():
    assert len(README.splitlines()) <= 250
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 5
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)", README))
    assert linked == set(pages), f"README links {sorted(linked)}, docs/ has {pages}"


# --- the package graph, the image, the environment, function size ----------------------------------------

RUNTIME_CODE = [path for path in PRODUCT_CODE if path.is_relative_to(ROOT / "worker") or path.name == "handler.py"]


def _import_graph():
    return _script("import_graph")


def test_no_import_circles_between_modules_or_packages():
    """Function-level imports count: an import moved into a function to dodge a circle is still one."""
    graph = _import_graph()
    modules = graph.module_graph()
    assert graph.circles(modules) == []
    assert graph.circles(graph.package_graph(modules)) == []


def test_the_runtime_does_not_import_dev_tools_or_benches():
    graph = _import_graph()
    runtime = {name: deps for name, deps in graph.module_graph().items() if name.split(".")[0] in ("worker", "config", "handler")}
    leaks = {name: sorted(d for d in deps if d.split(".")[0] in ("devtools", "bench")) for name, deps in runtime.items()}
    assert not {name: deps for name, deps in leaks.items() if deps}


@pytest.mark.parametrize("package", ["worker/jobs", "worker/routes", "worker/requests", "worker/media", "worker/engine"])
def test_requests_and_routes_do_not_depend_on_the_runpod_sdk(package):
    """What a job or route request becomes is the same for every transport (queue jobs, direct HTTP)."""
    for path in sorted((ROOT / package).rglob("*.py")):
        sdk = sorted(m for m in imported_modules(path) if m.split(".")[0] == "runpod" or m.startswith("worker.transports"))
        assert not sdk, f"{path.relative_to(ROOT)} imports {sdk}"


def test_the_image_copies_only_the_runtime():
    copied = {source.rstrip("/") for line in re.findall(r"^COPY (?!--)(.+)$", DOCKERFILE, re.MULTILINE)
              for source in line.split()[:-1]}
    assert copied <= {"requirements.txt", "constraints.txt", "config", "worker", "handler.py", "test_input.json",
                      "worker/__init__.py", "worker/logs.py", "worker/model_files"}, copied
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert not [name for name in allowed if name.split("/")[0] in ("devtools", "bench", "tests", "scripts", "docs")]
    assert not list((ROOT / "worker").rglob("bench*.py")) and not list((ROOT / "worker").rglob("tiny_*.py"))


ENVIRONMENT_USE = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b")


def test_the_environment_is_read_in_config_and_written_in_one_start_up_module():
    touching = sorted(str(path.relative_to(ROOT)) for path in RUNTIME_CODE if ENVIRONMENT_USE.search(path.read_text()))
    assert touching == ["worker/startup/environment.py"]


def test_every_variable_the_worker_writes_is_named_with_why():
    from worker.startup import environment

    written = set(re.findall(r'set_(?:variable|default)\("([A-Z_]+)"', "".join(p.read_text() for p in PRODUCT_CODE)))
    assert written <= set(environment.WRITTEN)
    assert all(len(why) > 20 for why in environment.WRITTEN.values())


def test_the_mask_is_written_once():
    found = [str(p.relative_to(ROOT)) for p in PRODUCT_CODE if "*" * 10 in p.read_text()]
    assert found == ["config/secrets.py"]


MAX_FUNCTION_LINES = 60


def test_no_runtime_function_is_over_60_lines():
    long = []
    for path in RUNTIME_CODE + sorted((ROOT / "config").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long


def test_tests_share_code_through_helpers_not_other_test_modules():
    """Test files sit in folders that are not packages: one test module cannot import another."""
    found = [(str(path.relative_to(ROOT)), module) for path in sorted((ROOT / "tests").rglob("test_*.py"))
             for module in imported_modules(path) if module.split(".")[-1].startswith("test_")]
    assert not found
