"""Hyperparameter search over experiment configs (optuna; every trial is a run directory).

    from lvmkit.search import run_search, search_report
    study = run_search("configs/search_vae_digits.toml", trials=20, out="searches/vae")
    search_report("searches/vae")     # search.html, search.json, best.toml
"""
from lvmkit.search.report import search_report
from lvmkit.search.space import PARAM_TYPES, SAMPLERS, SearchSpace, load_space, parse_space
from lvmkit.search.study import run_search

__all__ = ["PARAM_TYPES", "SAMPLERS", "SearchSpace", "load_space", "parse_space", "run_search", "search_report"]
