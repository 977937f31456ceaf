"""The package layout holds: imports flow one way, nothing imports in a circle, cluster/ holds Ray and nothing else.

The order (README, "Layout"): ``core <- entropy, envs <- replay <- actors, learners <- analysis | cluster <-
pipelines <- cli``.  A module may import its own package and packages of a lower rank, never one of the same rank
(``entropy`` and ``envs`` are independent leaves, as are ``actors`` and ``learners``; ``analysis`` never gains a
Ray dependency and ``cluster`` never gains reporting) nor one to its right.  Every import counts, the ones inside
functions too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RANK = {"core": 0, "entropy": 1, "envs": 1, "replay": 2, "actors": 3, "learners": 3, "analysis": 4, "cluster": 4,
        "pipelines": 5, "cli": 6}


def _modules() -> dict[str, Path]:
    """``bex.<package>.<module>`` -> file, for every module of the installed packages."""
    mods = {}
    for pkg in RANK:
        for path in sorted((REPO / pkg).glob("*.py")):
            name = f"bex.{pkg}" if path.stem == "__init__" else f"bex.{pkg}.{path.stem}"
            mods[name] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The bex modules ``name`` imports (``from bex.x import y`` counts as ``bex.x.y`` when that is a module)."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [(mod, [a.name for a in node.names])]
        else:
            continue
        for mod, names in targets:
            if not mod.startswith("bex."):
                continue
            subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in known]
            out.update(subs if subs and len(subs) == len(names) else [mod] + subs)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _package(module: str) -> str:
    return module.split(".")[1]


def test_the_layout_lists_every_package():
    pkgs = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert pkgs == set(RANK), f"packages without a rank in the layout: {pkgs ^ set(RANK)}"


def test_imports_never_run_right_to_left():
    bad = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
           if _package(d) != _package(m) and RANK[_package(d)] >= RANK[_package(m)]]
    assert not bad, "imports against the layout order:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_in_a_circle():
    # a package's __init__ re-exports its modules; a module importing its own package's __init__ would close a
    # circle through it, so the edges into a package's own __init__ from its modules count like any other
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _ray_imports(path: Path) -> list[str]:
    """The ``ray`` modules a file imports anywhere (inside functions too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        out += [m for m in mods if m == "ray" or m.startswith("ray.")]
    return out


def test_ray_is_imported_in_cluster_only():
    bad = [f"{name} imports {m}" for name, path in _modules().items() if _package(name) != "cluster"
           for m in _ray_imports(path)]
    assert not bad, "\n".join(bad)


def test_every_cluster_module_imports_ray():
    """cluster/ holds Ray and nothing else: a Ray-free helper belongs in the package of what it does."""
    bad = [name for name, path in _modules().items()
           if _package(name) == "cluster" and path.stem != "__init__" and not _ray_imports(path)]
    assert not bad, f"modules of cluster/ that never import ray: {bad}"


def test_the_ray_checks_can_fail(tmp_path):
    ray_free = tmp_path / "helpers.py"
    ray_free.write_text("import os\n\ndef f():\n    return os.sep\n")
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from ray import tune\n    return tune\n")
    assert _ray_imports(ray_free) == [] and _ray_imports(lazy) == ["ray"]


@pytest.mark.parametrize("pkg", ["envs", "replay"])
def test_user_packages_of_the_same_name_win(tmp_path, pkg):
    """A project with its own ``envs/``/``replay/`` folders imports them, and bex's modules still import."""
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("MINE = True\n")
    code = (f"import {pkg}; assert {pkg}.MINE, {pkg}.__file__\n"
            "from bex.replay import Dataset\nfrom bex.envs import EnvSpec\nprint('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_generic_names_are_not_installed(tmp_path):
    """Outside the checkout none of ``core, entropy, envs, replay, actors, learners, cluster`` is importable."""
    code = ("import importlib.util, sys\n"
            f"print(sorted(n for n in {sorted(RANK)!r} if importlib.util.find_spec(n) is not None))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


@pytest.mark.slow
def test_the_wheel_installs_the_bex_namespace_only(tmp_path):
    """``pip wheel .`` packs exactly ``bex/<package>/...`` (with cluster.yaml), and the installed copy imports."""
    import shutil
    import zipfile

    had_build = (REPO / "build").exists()
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    finally:
        if not had_build:
            shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools builds in the tree
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = tmp_path.glob("bex_rl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"bex"}, tops
    assert {n.split("/")[1] for n in names if n.startswith("bex/")} == set(RANK)
    assert "bex/cluster/cluster.yaml" in names and "bex/actors/collect.py" in names
    assert not any("/tests/" in n or n.startswith("bex/__init__") for n in names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import bex.replay, bex.cli.main, bex.actors.collect\n"
            "print(bex.replay.__file__)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(target)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith(str(target)), r.stdout  # the wheel's copy, not the checkout's


def test_checking_a_collection_config_or_a_dataset_does_not_import_torch(tmp_path):
    """The CLI's input checks start without torch (its agents and batches load on first use)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from bex.actors.collect import CollectConfig\n"
            "from bex.replay import Dataset\n"
            f"CollectConfig(out={str(tmp_path / 'd')!r}, explorer='apt', objective='be', param=0.5).validate()\n"
            "assert 'torch' not in sys.modules, 'torch imported by a config check'\n"
            "import bex.actors, bex.replay\n"
            "assert bex.replay.Batch.__module__ == 'bex.replay.batch' and 'torch' in sys.modules\n"
            "assert bex.actors.APTAgent.__name__ == 'APTAgent'\n"
            "try:\n    bex.actors.NoSuchName\nexcept AttributeError as e:\n    print('OK', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK module 'bex.actors' has no attribute 'NoSuchName'" in r.stdout
