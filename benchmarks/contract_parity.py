"""Numbers before and after a change to the training contract: the digits demo, the DEC test's
run and a spirals smoke run, trained and evaluated through the CLI with fixed seeds.

    python benchmarks/contract_parity.py --label before   # on the old commit
    python benchmarks/contract_parity.py --label after    # on the new one

Writes benchmarks/results/contract_parity_LABEL.json; compare the two files key by key.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, write_json

CASES = {
    "digits_demo": ["configs/vae_digits.toml"],
    "dec_digits": [None, "model.kind=dec", "model.latent_dim=5", "model.hidden=[64]", "model.clusters=10",
                   "model.pretrain_steps=200", "model.dec_interval=20", "model.gamma=0.1", "train.epochs=30",
                   "train.batch_size=64", "train.patience=0", "eval.k=20"],
    "spirals_smoke": ["configs/latent_ode_spirals.toml", "train.epochs=15", "data.n_series=200"],
    # Every other family, a few steps each (issue 23's moves touched them all).
    "gan_digits": ["configs/gan_digits.toml", "train.max_steps=40", "train.epochs=1"],
    "ddpm_digits": ["configs/ddpm_digits.toml", "train.max_steps=20", "train.epochs=1"],
    "rbm_digits": ["configs/rbm_digits.toml", "train.max_steps=60", "train.epochs=1"],
    "dbn_digits": ["configs/dbn_digits.toml", "train.max_steps=60", "train.epochs=1"],
    "ebm_digits": ["configs/ebm_digits.toml", "train.max_steps=20", "train.epochs=1"],
    "draw_digits": ["configs/draw_digits.toml", "train.max_steps=40", "train.epochs=1"],
}


def _lvmkit(*args: str, allow_refusal: bool = False) -> str:
    out = subprocess.run([sys.executable, "-m", "lvmkit", *args], capture_output=True, text=True, cwd=REPO)
    if allow_refusal and out.returncode == 2:
        return out.stderr.strip()
    if out.returncode != 0:
        raise SystemExit(f"lvmkit {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, *sets) in CASES.items():
            run = Path(tmp) / name
            cmd = ["train", *([config] if config else []), "-o", str(run), "--no-report", "-q", "--set", "train.threads=1",
                   "--set", "train.device=cpu"]
            for s in sets:
                cmd += ["--set", s]
            _lvmkit(*cmd)
            refusal = _lvmkit("evaluate", str(run), "--k", "100", allow_refusal=True)
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {"refused": refusal}
            drop = ("seconds", "train_seconds", "iw_seconds", "iw_examples_per_second")
            results[name] = {"epochs": len(metrics),
                             "last_epoch": {k: v for k, v in metrics[-1].items() if k not in drop},
                             "eval": {k: v for k, v in ev.items() if k not in drop}}
            print(name, json.dumps(results[name]["eval"]), flush=True)
    write_json(REPO / "benchmarks" / "results" / f"contract_parity_{args.label}.json", results)


if __name__ == "__main__":
    main()
