"""The architecture as a test: layers import downward only, families import no other family
(import-linter's contracts in pyproject.toml), and no two lvmkit modules import each other."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=src)


def test_import_contracts_hold():
    out = _lint(ROOT / "src")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_an_upward_import_breaks_the_layers_contract_and_is_named(tmp_path):
    shutil.copytree(ROOT / "src" / "lvmkit", tmp_path / "lvmkit", ignore=shutil.ignore_patterns("__pycache__"))
    errors = tmp_path / "lvmkit" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom lvmkit.analysis import probe as _upward  # noqa\n")
    family = tmp_path / "lvmkit" / "models" / "gan" / "networks.py"
    family.write_text(family.read_text() + "\nfrom lvmkit.models.energy import boltzmann as _sideways  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "lvmkit.core.errors -> lvmkit.analysis.probe" in out.stdout
    assert "lvmkit.models.gan.networks -> lvmkit.models.energy.boltzmann" in out.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_no_import_cycles_among_lvmkit_modules():
    # Imports under `if TYPE_CHECKING:` never run, so they cannot form a cycle.
    graph = grimp.build_graph("lvmkit", cache_dir=None, exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert _cycles(Graph()) == [["a", "b", "c"]]


def test_the_worked_family_of_docs_architecture_registers_trains_and_encodes(tmp_path):
    """docs/architecture.md's smallest family, run as written: it registers, validates its
    config (an unknown key names the family's keys), trains through the one loop and embeds."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = block + f'''
import lvmkit, torch
from lvmkit.core.errors import ConfigError
try:
    lvmkit.make_config({{"model": {{"kind": "linear-ae", "hidden": [8]}}}})
    raise SystemExit("an unknown key passed")
except ConfigError as err:
    assert "latent_dim" in str(err), err
cfg = lvmkit.make_config({{"model": {{"kind": "linear-ae", "latent_dim": 3}}, "data": {{"name": "digits"}},
                         "train": {{"epochs": 2, "max_steps": 20, "threads": 1, "device": "cpu"}}}})
run = lvmkit.train(cfg, {str(tmp_path / "run")!r}, progress=False)
model = run.load_model("last")
assert lvmkit.capabilities(model) == ["encoder"], lvmkit.capabilities(model)
codes = model.embed(run.data().test.x[:5])
assert codes.shape == (5, 3)
first, last = run.read_metrics()[0]["val_loss"], run.read_metrics()[-1]["val_loss"]
assert last < first, (first, last)
print("ok")
'''
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
