"""Sentences that say what a result means, for the CLI and report.html."""
from __future__ import annotations


def describe_probe(out: dict) -> str:
    """One sentence on what a probe's numbers mean: the codes against PCA of equal width (the
    gap is what the nonlinear encoder adds) and against the raw inputs (what a linear classifier
    gets from every input value), at each budget probed."""
    res, widths, budgets = out["results"], out.get("widths", {}), out["labels"]

    def f1(name: str) -> str:
        return "/".join(f"{res[name][str(n)]['macro_f1']['mean']:.2f}" for n in budgets)

    text = (f"Macro F1 of a linear probe at {'/'.join(map(str, budgets))} labels per class: "
            f"the model's {widths.get('latent', '?')}-number codes {f1('latent')}")
    if "pca" in res:
        same = widths.get("pca") in (None, widths.get("latent"))  # PCA is capped at the components the data has
        pca = "PCA of the same width" if same else f"PCA of {widths['pca']} components (all the data has)"
        text += (f", {pca} {f1('pca')} (the gap is what the nonlinear encoder adds), "
                 f"the {widths.get('raw', '?')} raw inputs {f1('raw')} (what a linear classifier gets from everything)")
    return text + "."
