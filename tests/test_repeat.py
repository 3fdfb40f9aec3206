"""lvmkit repeat: one configuration trained with several seeds, mean +- std of every metric on
validation and test, and the thesis protocol's per-class rows with the standard precision and
recall (the thesis's equations 4.2 and 4.3 swap them)."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import lvmkit
from lvmkit.analysis.probe import thesis_scores
from lvmkit.cli import main
from lvmkit.core import _toml

CONFIG = {
    "data": {"name": "digits", "limit": 400},
    "model": {"kind": "vae", "latent_dim": 3, "hidden": [16]},
    "train": {"epochs": 2, "batch_size": 64, "patience": 0, "device": "cpu", "seed": 5},
}


def test_precision_and_recall_are_the_standard_ones():
    # Constant features: the probe predicts the majority class 0 for every row, so class 0 has
    # recall TP / (TP + FN) = 1 and precision TP / (TP + FP) = its share of the rows (the thesis's
    # eq. 4.2 / 4.3 would swap the two).
    y = np.array([0] * 70 + [1] * 30)
    res = thesis_scores(np.zeros((100, 1)), y, fraction=1.0, test_share=0.3, repeats=2, rows=("train", "test"))
    for row, share in (("train", 49 / 70), ("test", 21 / 30)):
        assert res[row]["recall"]["mean"][0] == 1.0 and res[row]["recall"]["mean"][1] == 0.0
        assert res[row]["precision"]["mean"][0] == pytest.approx(share)


def test_repeat_summarises_every_seed(tmp_path):
    out = tmp_path / "r"
    res = lvmkit.repeat(lvmkit.make_config(CONFIG), seeds=2, out=out, objective="probe_f1", objective_class=3,
                        objective_labels=5)
    assert res["seeds"] == [5, 6]
    assert [lvmkit.Run.open(r).config.train.seed for r in res["runs"]] == [5, 6]
    for split in ("validation", "test"):
        values = [r["objective"]["val" if split == "validation" else "test"] for r in res["per_run"]]
        stat = res["objective"][split]
        assert stat["values"] == values and stat["mean"] == pytest.approx(np.mean(values))
        assert stat["std"] == pytest.approx(np.std(values, ddof=1))
    assert res["metrics"]["test_loss"]["split"] == "test" and res["metrics"]["val_loss"]["split"] == "validation"
    thesis = res["thesis_protocol"]
    assert thesis["class_names"] == [str(i) for i in range(10)]
    f1 = np.array([r["thesis"]["test"]["f1"]["mean"] for r in res["per_run"]])
    assert thesis["test"]["f1"]["mean"] == pytest.approx(f1.mean(0).tolist())
    assert set(thesis) >= {"train", "test"} and set(thesis["train"]) == {"f1", "recall", "precision"}
    assert "swap the two names" in res["definitions"]
    assert json.loads((out / "repeat.json").read_text())["seeds"] == [5, 6]
    page = (out / "repeat.html").read_text()
    assert "precision = TP / (TP + FP)" in page and "Table 4.4" in page
    again = lvmkit.repeat(lvmkit.make_config(CONFIG), seeds=2, out=out, objective="probe_f1", objective_class=3,
                          objective_labels=5)  # the runs are there: continued (nothing left), not retrained
    assert again["objective"]["test"]["values"] == res["objective"]["test"]["values"]


def test_parallel_workers_give_the_same_summary(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # one thread per worker, as the suite's own (same arithmetic)
    kw = dict(seeds=2, objective="probe_f1", objective_class=3, objective_labels=5)
    one = lvmkit.repeat(lvmkit.make_config(CONFIG), out=tmp_path / "one", **kw)
    two = lvmkit.repeat(lvmkit.make_config(CONFIG), out=tmp_path / "two", workers=2, **kw)
    assert two["seeds"] == [5, 6]
    for split in ("validation", "test"):
        assert two["objective"][split]["values"] == one["objective"][split]["values"]
    assert two["metrics"]["test_loss"] == one["metrics"]["test_loss"]
    with pytest.raises(lvmkit.LvmkitError, match="workers must be a positive number of processes, got 0"):
        lvmkit.repeat(lvmkit.make_config(CONFIG), out=tmp_path / "zero", workers=0, **kw)


def test_cli_repeat_and_its_errors(capsys, tmp_path):
    path = tmp_path / "vae.toml"
    path.write_text(_toml.dumps(CONFIG))
    code = main(["repeat", str(path), "--seeds", "2", "--out", str(tmp_path / "r"), "--set", "train.epochs=1", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(tmp_path / "r" / "repeat.html")
    assert "val_loss over 2 seeds: " in captured.err and "; test_loss: " in captured.err and "the thesis's equations 4.2 and 4.3" in captured.err
    assert lvmkit.Run.open(tmp_path / "r" / "seed-5").config.train.epochs == 1
    code = main(["repeat", str(path), "--objective", "probe_f1", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs search.objective_class" in err
    assert not (tmp_path / "bad").exists()
    code = main(["repeat", str(path), "--seeds", "2", "--out", str(tmp_path / "r")])  # another config in the same place
    err = capsys.readouterr().err
    assert code == 2 and "holds a run of another configuration" in err


class _Tables(HTMLParser):
    """The page's tables as rows of cell texts, each with the classes of the elements around it,
    and the page's CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self.css, self._open, self._style = [], "", [], False

    def handle_starttag(self, tag, attrs):
        self._style = tag == "style"
        if tag == "table":
            around = [c for t, c in self._open if c]
            self.tables.append({"around": around, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self.tables[-1]["rows"][-1].append("")
        if tag not in ("br", "meta"):
            self._open.append((tag, dict(attrs).get("class")))

    def handle_endtag(self, tag):
        self._style = False
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._style:
            self.css += data
        elif self.tables and self.tables[-1]["rows"] and self.tables[-1]["rows"][-1] and \
                any(t in ("td", "th") for t, _ in self._open):
            self.tables[-1]["rows"][-1][-1] += data


def test_repeat_page_names_each_figure_by_split_and_objective(tmp_path):
    res = lvmkit.repeat(lvmkit.make_config({**CONFIG, "train": {**CONFIG["train"], "epochs": 1}}), seeds=2,
                        out=tmp_path / "r")  # objective val_loss
    obj = res["objective"]
    assert obj["names"] == {"validation": "val_loss", "test": "test_loss"}
    # The objective measured on the test split is the test loss, the figure its name now says.
    assert obj["test"]["values"] == res["metrics"]["test_loss"]["values"] != obj["validation"]["values"]
    assert obj["validation"]["values"] == res["metrics"]["val_loss"]["values"]

    page = _Tables()
    page.feed((tmp_path / "r" / "repeat.html").read_text())
    metrics, per_class = page.tables
    header, *rows = metrics["rows"]
    assert header[:2] == ["metric", "split"]
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), names  # one name per figure (val_loss appeared three times)
    for name, split, *_ in rows:
        assert split == {"val": "validation", "test": "test"}.get(name.split("_", 1)[0], "run"), (name, split)
    by_name = {r[0]: r for r in rows}
    assert "objective (val_loss) on the test split" in by_name["test_loss"][2]
    assert by_name["test_loss"][3].startswith(f"{obj['test']['mean']:.4g}")
    assert {"val_kl", "test_kl", "epochs"} <= set(names)

    # The per-class table (10 classes x 3 columns) scrolls inside a container of the page's width.
    assert len(per_class["rows"][1]) == 31 and "wide" in per_class["around"]
    rule = re.search(r"\.wide\s*\{([^}]*)\}", page.css)
    assert rule and "overflow-x:auto" in rule.group(1).replace(" ", "") and "max-width:100%" in rule.group(1).replace(" ", "")
