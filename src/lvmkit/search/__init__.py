"""Hyperparameter search over experiment configs (optuna; every trial is a run directory).

    from lvmkit.search import repeat, run_search, search_report
    study = run_search("configs/search_vae_digits.toml", trials=20, out="searches/vae")
    search_report("searches/vae")     # search.html, search.json, best.toml
    repeat("searches/vae/best.toml", seeds=10, out="repeats/vae")   # repeat.json, repeat.html
"""
from lvmkit.search.objectives import OBJECTIVES, Objective, ProbeF1, RecordMetric, make_objective
from lvmkit.search.report import search_report
from lvmkit.search.repeat import repeat
from lvmkit.search.space import PARAM_TYPES, SAMPLERS, SearchSpace, load_space, parse_space
from lvmkit.search.study import run_search

__all__ = ["OBJECTIVES", "Objective", "PARAM_TYPES", "ProbeF1", "RecordMetric", "SAMPLERS", "SearchSpace", "load_space",
           "make_objective", "parse_space", "repeat", "run_search", "search_report"]
