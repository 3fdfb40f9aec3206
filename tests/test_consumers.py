"""The consumer matrix: every registered family x every command that consumes a capability.

Each cell either works on the family's tiny example or refuses in one line (an LvmkitError:
ConfigError or DataError, never an AttributeError, TypeError or scikit-learn's ValueError). What
is expected of a cell comes from two declarations beside the family, never from the code that
answers it: a refusal for a capability the trained instance does not offer (``has``; the
capabilities each command calls are listed here, independently of the commands' own checks),
and the refusals a family declares for other reasons (``Family.refuses``, an example's
``"refuses"``), as scikit-learn's estimator checks declare expected failures. A declared refusal
that works, or a cell that refuses without a declaration, fails too.

Each family's examples are trained once for the module: the first, every later one whose trained
instance offers another set of capabilities (a deterministic autoencoder, DEC), and every one
whose codes are wider than its input (DRAW's codes of all steps).
"""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch

import lvmkit
from lvmkit.analysis.anomaly import SCORES
from lvmkit.core.contract import (FAMILIES, ClusterModel, Encoder, EnergyModel, EvidenceBound, Generator,
                                  IterativeGenerator, Reconstructor, capabilities, has)

_TRAIN = {"epochs": 2, "batch_size": 32, "patience": 0, "device": "cpu", "seed": 3, "sample_every": 0}


def _data_doc(example: dict, folder) -> dict:
    """The example's data, or 120 uniform examples of its input shape with 3 classes (one file per
    shape, so that the quality measure's feature classifier is trained once per shape)."""
    if "data" in example:
        return copy.deepcopy(example["data"])
    shape = tuple(example["input_shape"])
    stored = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape  # load_data adds the channel axis
    path = folder / f"data-{'x'.join(map(str, shape))}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.random((120, *stored), dtype=np.float32), y=rng.integers(0, 3, 120))
    return {"name": "npz", "path": str(path)}


def _config(example: dict, folder) -> lvmkit.ExperimentConfig:
    return lvmkit.make_config({"data": _data_doc(example, folder), "model": copy.deepcopy(example["model"]),
                               "train": dict(_TRAIN)})


def _selected() -> list[tuple[str, int]]:
    """(family, example index) of the examples the matrix trains (see the module docstring);
    chosen when the module is collected, from untrained models (cheap)."""
    chosen = []
    for name in FAMILIES:
        seen = set()
        for i, example in enumerate(FAMILIES.get(name).examples):
            if "data" in example:
                cfg = lvmkit.make_config({"data": example["data"], "model": copy.deepcopy(example["model"])})
                train_x = lvmkit.load_data(cfg.data, 0).train.x
            else:
                cfg = lvmkit.make_config({"model": copy.deepcopy(example["model"])})
                train_x = torch.rand(120, *example["input_shape"], generator=torch.Generator().manual_seed(0))
            model = lvmkit.build_model(cfg.model, tuple(train_x.shape[1:]))
            model.update(train_x, 10**6)  # past any pretraining stage, as training ends there
            caps = frozenset(capabilities(model))
            wide = has(model, Encoder) and model.latent_dim > math.prod(train_x.shape[1:])
            if caps not in seen or wide:
                chosen.append((name, i))
                seen.add(caps)
    return chosen


EXAMPLES = _selected()


# -- the commands, with the capabilities each calls ---------------------------------------------
def _sample(run, tmp, model):
    x = lvmkit.sample(run, 4)
    assert x.shape == (4, *model.input_shape) and np.isfinite(x).all()


def _sample_eta(run, tmp, model):
    x = lvmkit.sample(run, 4, eta=0.5)
    assert x.shape == (4, *model.input_shape) and np.isfinite(x).all()


def _evaluate(run, tmp, model):
    res = lvmkit.evaluate(run, k=2, write=False)
    assert all(math.isfinite(v) for v in res.values() if isinstance(v, float))


def _quality(run, tmp, model):
    res = lvmkit.quality(run, n=8, write=False)
    assert res["n_generated"] == 8 and math.isfinite(res["frechet_distance"])


def _probe(run, tmp, model):
    res = lvmkit.probe(run, [2], 1, write=False)
    data = run.data()
    n, d = len(data.train), math.prod(data.shape)
    # the PCA baseline: the codes' width, or every component the data has, and then said so
    assert res["widths"]["latent"] == model.latent_dim
    assert res["widths"]["pca"] == min(model.latent_dim, n, d)
    if model.latent_dim > min(n, d):
        assert re.match(rf"PCA of {min(n, d)} components: all the data has", res["notes"]["pca"])
    else:
        assert "pca" not in res["notes"]


def _cluster(run, tmp, model):
    res = lvmkit.cluster(run, 3, write=False)
    assert sum(res["results"]["latent"]["sizes"]) == len(run.data().test)
    assert ("pca" in res["notes"]) == (model.latent_dim > min(len(run.data().train), math.prod(run.data().shape)))


def _cluster_model(run, tmp, model):
    k = model.n_clusters if has(model, ClusterModel) else 3
    res = lvmkit.cluster(run, k, method="model", write=False)
    assert res["results"]["latent"]["method"] == "model" and sum(res["results"]["latent"]["sizes"]) == len(run.data().test)


def _anomaly(score):
    def cell(run, tmp, model):
        res = lvmkit.anomaly(run, score, [0.5], write=False)
        assert res["n"] == len(run.data().test) and math.isfinite(res["thresholds"]["0.5"])
    return cell


def _report(run, tmp, model):
    assert lvmkit.write_report(run).is_file()


def _compare(run, tmp, model):
    res = lvmkit.compare([run], tmp / "compare", n_time=2)
    assert len(res["runs"]) == 1 and (tmp / "compare" / "compare.html").is_file()


SCORE_NEEDS = {"recon": (Reconstructor,), "elbo": (EvidenceBound,), "energy": (EnergyModel,),
               "latent-knn": (Encoder,), "recon+knn": (Reconstructor, Encoder)}
CELLS = {
    "sample": ((Generator,), _sample),
    "sample --eta": ((IterativeGenerator,), _sample_eta),
    "evaluate": ((), _evaluate),
    "quality": ((Generator,), _quality),
    "probe": ((Encoder,), _probe),
    "cluster": ((Encoder,), _cluster),
    "cluster --method model": ((Encoder, ClusterModel), _cluster_model),
    **{f"anomaly --score {s}": (needs, _anomaly(s)) for s, needs in SCORE_NEEDS.items()},
    "report": ((), _report),
    "compare": ((), _compare),
}


def test_every_score_has_a_cell_and_declarations_name_cells():
    assert set(SCORE_NEEDS) == set(SCORES)
    for name in FAMILIES:
        family = FAMILIES.get(name)
        for declared in [family.refuses, *(e.get("refuses", {}) for e in family.examples)]:
            assert set(declared) <= set(CELLS), f"family {name!r} declares refusals of unknown commands"


def test_the_matrix_holds_a_code_wider_than_its_input(trained):
    wide = [key for key in EXAMPLES if has(m := trained(*key)[1], Encoder) and m.latent_dim > math.prod(m.input_shape)]
    assert wide, "no family example has codes wider than its input"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run, model) of an example, trained on first use and kept for the module."""
    runs: dict = {}
    root = tmp_path_factory.mktemp("consumers")
    (root / "data").mkdir()

    def get(name: str, i: int):
        if (name, i) not in runs:
            cfg = _config(FAMILIES.get(name).examples[i], root / "data")
            torch.manual_seed(0)
            run = lvmkit.train(cfg, root / f"{name}-{i}", progress=False, report=False)
            runs[name, i] = run, run.load_model()
        return runs[name, i]

    return get


@pytest.mark.parametrize("name,i,cell", [pytest.param(name, i, cell, id=f"{name}-{i}:{cell}")
                                         for name, i in EXAMPLES for cell in CELLS])
def test_each_command_works_or_refuses_in_one_line(name, i, cell, trained, tmp_path):
    run, model = trained(name, i)
    needs, call = CELLS[cell]
    example = FAMILIES.get(name).examples[i]
    declared = {**FAMILIES.get(name).refuses, **example.get("refuses", {})}
    missing = [c.__name__ for c in needs if not has(model, c)]
    if cell in declared:
        expected = declared[cell]
    elif missing:
        expected = r"needs a model that is"
    else:
        expected = None
    try:
        call(run, tmp_path, model)
    except lvmkit.LvmkitError as err:
        text = str(err)
        assert "\n" not in text, f"a refusal is one line, got:\n{text}"
        assert expected is not None, (f"{cell!r} refused the {name} example without a declaration: {text} (declare it "
                                      "in the family's refuses, or make the command work)")
        assert re.search(expected, text), f"{cell!r} refused with {text!r}, not matching {expected!r}"
    else:
        assert expected is None, (f"{cell!r} worked on the {name} example, but a refusal is declared ({expected!r}; "
                                  f"lacks {missing or 'nothing'})")
