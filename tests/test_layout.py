"""The house rules of STYLE.md and the brief that a test can check."""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
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
    """Only mseg_fast/dali/ imports DALI; only the adapter (mseg_fast/loader.py) imports mseg_fast/dali/, inside
    its branch; nothing in the library imports the commands (tools/); the model never imports data code."""
    dali_dir = REPO / "mseg_fast" / "dali"
    for path in (REPO / "mseg_fast").rglob("*.py"):
        for name in imports_of(path):
            if dali_dir not in path.parents:
                assert not name.startswith("nvidia.dali"), f"{path} imports DALI; only mseg_fast/dali/ may"
            assert not name.startswith(("tools", "train", "mseg_fast.tools")), f"{path} imports a command"
            if name.startswith("mseg_fast.dali") and dali_dir not in path.parents:
                assert path.name == "loader.py", f"{path} imports mseg_fast/dali/; only mseg_fast/loader.py may"
                assert name not in imports_of(path, top_level_only=True), "mseg_fast/dali/ is imported lazily"
    for path in (REPO / "mseg_fast" / "models").rglob("*.py"):
        data = [n for n in imports_of(path) if n.startswith(("mseg_fast.data", "mseg_fast.shards", "mseg_fast.loader"))]
        assert not data, f"{path} imports data code {data}; the model sees data only as tensors"


def test_import_mseg_fast_does_not_load_dali():
    code = ("import sys, mseg_fast, mseg_fast.shards.build, mseg_fast.shards.report, mseg_fast.demo_data; "
            "sys.exit(1 if any(m.startswith('nvidia.dali') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_mseg_fast_works_without_dali():
    """Every library module but mseg_fast/dali/ imports, and shard.py runs its help, where DALI is not installed."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "mseg_fast").rglob("*.py")
                     if "dali" not in p.relative_to(REPO).parts)
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


def test_pip_install_gives_console_scripts_and_recipes(tmp_path):
    """`pip install .` (a real, non-editable install into a folder) gives every command as a console script,
    and the shipped recipes as package data: run from another folder, with no checkout on the path."""
    target, source = tmp_path / "site", tmp_path / "source"
    # From a copy of the tracked files, as a release archive holds them (setuptools builds inside the source tree).
    for name in subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(target), str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    setup = (REPO / "setup.py").read_text()
    commands = ast.literal_eval(setup[setup.index("COMMANDS = ") + len("COMMANDS = "):setup.index("]", setup.index(
        "COMMANDS = ")) + 1])
    assert sorted(f"{name}.py" for name in commands) == sorted(p.name for p in (REPO / "tools").glob("[!_]*.py"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([sys.executable, "-c", "import mseg_fast, mseg_fast.tools.train as t; print(t.__file__)"],
                           capture_output=True, text=True, env=env, cwd=elsewhere)
    assert where.stdout.startswith(str(target)), where
    for name in commands:
        script = target / "bin" / f"mseg-{name.replace('_', '-')}"
        assert script.is_file(), f"no console script {script.name}"
    shown = subprocess.run([sys.executable, str(target / "bin" / "mseg-train"), "1080/mseg-3m", "max_iters=5",
                            "--print-config"], capture_output=True, text=True, env=env, cwd=elsewhere)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "max_iters: 5" in shown.stdout and "- mapillary-public65-relabeled" in shown.stdout
    helped = subprocess.run([sys.executable, str(target / "bin" / "mseg-shard"), "--help"], capture_output=True,
                            text=True, env=env, cwd=elsewhere)
    words = " ".join(helped.stdout.split())
    assert helped.returncode == 0 and "--dataset" in words and "(default: universal)" in words, words


def test_docs_links_resolve_and_cite_nothing_a_reader_cannot_follow():
    """README and docs/: every relative link reaches a file; no reference sections or issue numbers outside
    the changelog; the README stays about a page."""
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: the link {target} leads nowhere"
        if page.name != "changelog.md":
            assert "§" not in text and not re.search(r"\b[Ii]ssue \d+", text), f"{page.name} cites what a reader lacks"
    assert len((REPO / "README.md").read_text(encoding="utf-8").split()) < 900, "the README is a page; docs/ the rest"
