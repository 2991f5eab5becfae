"""The house rules of STYLE.md and the brief that a test can check."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys

from helpers import REPO


def imports_of(path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_import_rules():
    """Only pipelines/ imports DALI; only the adapter (mseg_fast/loader.py) imports pipelines/, inside
    its branch; nothing imports the CLIs; the model never imports data code."""
    for path in (REPO / "mseg_fast").rglob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("nvidia.dali"), f"{path} imports DALI; only pipelines/ may"
            assert not name.startswith(("tools", "train")), f"{path} imports a CLI"
            if name.startswith("pipelines"):
                assert path.name == "loader.py", f"{path} imports pipelines/; only mseg_fast/loader.py may"
                assert name not in imports_of(path, top_level_only=True), "pipelines/ is imported lazily"
    for path in (REPO / "mseg_fast" / "models").rglob("*.py"):
        data = [n for n in imports_of(path) if n.startswith(("mseg_fast.data", "mseg_fast.shards", "mseg_fast.loader"))]
        assert not data, f"{path} imports data code {data}; the model sees data only as tensors"
    for path in (REPO / "pipelines").rglob("*.py"):
        assert not any(n.startswith(("tools", "train")) for n in imports_of(path)), f"{path} imports a CLI"


def test_import_mseg_fast_does_not_load_dali():
    code = ("import sys, mseg_fast, mseg_fast.shards.build, mseg_fast.shards.report, mseg_fast.demo_data; "
            "sys.exit(1 if any(m.startswith('nvidia.dali') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_mseg_fast_works_without_dali():
    """Every library module imports, and shard.py runs its help, where DALI is not installed."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "mseg_fast").rglob("*.py"))
    code = ("import sys, importlib; sys.modules['nvidia.dali'] = None; "  # None makes `import` raise ImportError
            f"[importlib.import_module(m.removesuffix('.__init__')) for m in {modules!r}]")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    blocked = f"import sys, runpy; sys.modules['nvidia.dali'] = None; sys.argv = ['shard.py', '--help']; " \
              f"runpy.run_path({str(REPO / 'tools' / 'shard.py')!r}, run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert result.returncode == 0 and "--dataset" in result.stdout


def test_no_mseg_file_is_copied_into_the_repository(mseg_api, test_photos):
    shared = set()
    for root in (mseg_api, test_photos):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size > 64:
                shared.add(hashlib.sha256(path.read_bytes()).hexdigest())
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        path = REPO / name
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() not in shared, f"{name} is a copy of a shared file"
