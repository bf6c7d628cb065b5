"""The package map holds: imports go one way (no cycles, function-level imports included) and each
package stays on its side of the boundaries README's layout section draws."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("studio", "ingest", "finetune", "generative", "eval")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module an imported name lives in (``studio.rag.chain.RagChain`` -> ``studio.rag.chain``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    """Every name ``path`` imports, at module level or inside a function (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


GRAPH = {name: {o for o in map(_owner, imports_of(path)) if o and o != name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(planted) == [["a", "b", "c"]]


def test_no_import_cycles_even_through_function_level_imports():
    assert cycles(GRAPH) == []


def _importers(target, packages: tuple[str, ...]) -> list[str]:
    return sorted(f"{name} imports {dep}" for name, path in MODULES.items() if name.split(".")[0] in packages
                  for dep in imports_of(path) if target(dep))


def test_only_the_ui_imports_gradio():
    outside = [line for line in _importers(lambda d: d.split(".")[0] in ("gradio", "gradio_client"), PACKAGES)
               if not line.startswith("studio.ui")]
    assert outside == []


@pytest.mark.parametrize("package", ["ingest", "finetune", "generative", "eval"])
def test_core_packages_never_import_the_ui_or_the_cli(package):
    assert _importers(lambda d: d.startswith(("studio.ui", "studio.cli")), (package,)) == []


def test_generative_and_ingest_never_import_each_other():
    assert _importers(lambda d: d.split(".")[0] == "ingest", ("generative",)) == []
    assert _importers(lambda d: d.split(".")[0] == "generative", ("ingest",)) == []


def test_core_studio_modules_do_not_know_the_cli():
    core = [n for n in MODULES if n.startswith("studio.") and not n.startswith(("studio.ui", "studio.cli"))]
    uses = sorted(f"{n} imports {d}" for n in core for d in GRAPH[n] if d.startswith(("studio.cli", "studio.ui")))
    assert uses == []


@pytest.mark.slow
def test_a_wheel_install_carries_its_data_and_configs(tmp_path):
    """Built and installed as a user outside the checkout would (no editable install): the judge's
    weights, the claim encoder and configs/ come along, and the studio finds them."""
    src = tmp_path / "src"  # a copy: setuptools builds in the source tree, and must not reuse a stale build/
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES, "configs"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, cwd=tmp_path, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies come from the test environment, the studio itself only from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("genai_studio-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    probe = ("import eval.groundedness as g, eval.crossencoder as c, studio.paths as p; "
             "import studio.rag.answerability as a; "
             "g.JudgeScorer(); print(g.__file__); print(p.CONFIGS); "
             "print((c.ENCODER_DIR / 'model.safetensors').is_file(), (p.CONFIGS / 'studio.yaml').is_file(), "
             "len(list(p.CONFIGS.rglob('*.yaml'))), 0 < a.threshold() < 1)")
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STUDIO_HOME": str(tmp_path / "h")})
    assert out.returncode == 0, out.stderr[-2000:]
    module, configs, found = out.stdout.splitlines()
    assert module.startswith(str(venv)) and configs.startswith(str(venv))  # not the checkout
    shipped = len(list((ROOT / "configs").rglob("*.yaml")))
    assert found == f"True True {shipped} True"  # ... and the answerability model's weights


def test_ui_functions_stay_short():
    """Tab builders are layout and wiring; handlers are module-level functions: none passes 60 lines."""
    long = []
    for path in (ROOT / "studio" / "ui").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
