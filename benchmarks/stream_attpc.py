"""Streamed vs in-memory training of the AT-TPC convolutional autoencoder (issue 15, item 1).

1. Make an HDF5 file of N events in the layout of ``lvmkit convert attpc`` (x float32
   (N, 1, 128, 128) in [0, 1], gzip chunks of 16 events; y int64): a few base events simulated
   with attpc-engine (``--base-source simulate``) or random sparse tracks from the beam axis
   (``random``), each replica rotated about the beam axis (the image centre) by a random angle,
   then projected as the converter does (log1p charge over its largest value in the base set).
2. Train configs/attpc_convae_none.toml (data read as ``data.name = "hdf5"``) for a fixed number
   of steps, each mode in its own process so that its peak RSS (``resource.getrusage``) is its
   own: ``memory`` and ``stream`` on the first ``--subset`` events (a set that fits in memory),
   and ``stream`` on all N events. Reported: loading seconds (the split, the scaling pass),
   examples per second of training steps (data reading included; a few warm-up steps left
   out), examples per second of reading alone, and peak RSS.

    # the issue's size (a 200,000-event file of 13 GB, about an hour on 2 cores):
    python benchmarks/stream_attpc.py --n 200000 --subset 20000 --steps 300
    # a smoke run
    python benchmarks/stream_attpc.py --n 2000 --subset 1000 --steps 10 --base 8 --json benchmarks/results/stream_attpc_smoke.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine_info, write_json  # noqa: E402


def _base_events(n: int, source: str, folder: Path, seed: int) -> list[tuple[np.ndarray, int]]:
    """(points (k, 4) x, y, z mm and charge, label) of ``n`` base events."""
    if source == "simulate":
        from lvmkit import attpc
        from lvmkit.data.attpc.spyral import SpyralReader

        out = []
        for label, reaction in enumerate(("proton", "carbon")):
            path = attpc.simulate(reaction, max(1, n // 2), folder / reaction, seed=seed + label, overwrite=True)
            out += [(e.points, label) for e in SpyralReader(path, min_points=50)]
        return out
    # random sparse tracks: from a vertex on the beam axis, a curved track of 60-400 points
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(60, 400))
        length = rng.uniform(40, 260)
        phi, bend = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.004)
        s = np.sort(rng.uniform(0, length, k))
        angle = phi + bend * s
        pts = np.stack([s * np.cos(angle), s * np.sin(angle), rng.uniform(0, 1000, k),
                        rng.gamma(2.0, 300.0, k) * (1 + (i % 2) * 3)], 1)
        out.append((pts, i % 2))
    return out


def make_file(path: Path, n: int, base: list[tuple[np.ndarray, int]], seed: int, chunk_events: int = 16) -> dict:
    """N replicas of the base events, each rotated about the beam axis by a random angle."""
    import h5py

    from lvmkit.data.attpc.project import project

    rng = np.random.default_rng(seed)
    scale = max(float(np.log1p(p[:, 3]).max()) for p, _ in base)  # the converter's global log1p scale
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", shape=(n, 1, 128, 128), dtype=np.float32, chunks=(chunk_events, 1, 128, 128),
                             compression="gzip", compression_opts=4, shuffle=True)
        labels = np.empty(n, dtype=np.int64)
        buf = np.zeros((256, 1, 128, 128), dtype=np.float32)
        for start in range(0, n, len(buf)):
            m = min(len(buf), n - start)
            for j in range(m):
                points, label = base[int(rng.integers(len(base)))]
                a = rng.uniform(0, 2 * np.pi)
                c, s = np.cos(a), np.sin(a)
                rotated = points.copy()
                rotated[:, 0], rotated[:, 1] = c * points[:, 0] - s * points[:, 1], s * points[:, 0] + c * points[:, 1]
                buf[j, 0] = project(rotated, "xy", 128, scale=scale)
                labels[start + j] = label
            x[start : start + m] = buf[:m]
        f["y"] = labels
        f.attrs["projection"] = "xy"
        f.attrs["class_names"] = ["proton", "carbon"]
    return {"events": n, "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def measure(path: str, stream: bool, steps: int, warmup: int, batch_size: int, threads: int, sets: list[str]) -> dict:
    """One mode, in this process: load, then time training steps and a reading-only pass."""
    import torch

    import lvmkit
    from lvmkit.core.optim import Optimizers
    from lvmkit.data import batches, load_data
    from lvmkit.models import build_model

    torch.set_num_threads(threads)
    cfg = lvmkit.load_config(ROOT / "configs/attpc_convae_none.toml",
                             ["data.name=hdf5", f"data.path={path}", f"data.stream={'true' if stream else 'false'}",
                              f"train.batch_size={batch_size}", *sets])
    t0 = time.perf_counter()
    data = load_data(cfg.data, cfg.train.seed)
    load_seconds = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(cfg.model, data.shape)
    opt = Optimizers(model.optimizer_groups(), cfg.train, model.optimizer_defaults)
    model.train()

    def stream_of_batches():
        for epoch in range(10**6):
            yield from batches(data.train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(epoch))

    it = stream_of_batches()
    for step in range(warmup):
        model.training_step(next(it)[0], step, opt)
    t0, seen = time.perf_counter(), 0
    for step in range(warmup, warmup + steps):
        xb = next(it)[0]
        model.training_step(xb, step, opt)
        seen += len(xb)
    train_seconds = time.perf_counter() - t0
    t0, read = time.perf_counter(), 0
    for xb, _ in batches(data.train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(99)):
        read += len(xb)
        if read >= steps * batch_size:
            break
    read_seconds = time.perf_counter() - t0
    return {"stream": stream, "events": len(data.train) + len(data.val) + len(data.test), "train_examples": len(data.train),
            "load_seconds": load_seconds, "steps": steps, "batch_size": batch_size,
            "examples_per_second": seen / train_seconds, "read_examples_per_second": read / read_seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "stream_info": data.info.get("stream")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="events in the streamed file")
    ap.add_argument("--subset", type=int, default=20_000, help="events of the set that fits in memory")
    ap.add_argument("--base", type=int, default=64, help="distinct base events")
    ap.add_argument("--base-source", default="simulate", choices=["simulate", "random"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config overrides, e.g. data.stream_buffer=8")
    ap.add_argument("--out", default="/tmp/lvmkit-stream")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/stream_attpc.json"))
    ap.add_argument("--measure", nargs=2, metavar=("PATH", "STREAM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # a child process: one mode, result as JSON on stdout
        res = measure(args.measure[0], args.measure[1] == "1", args.steps, args.warmup, args.batch_size, args.threads, args.sets)
        print(json.dumps(res))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = _base_events(args.base, args.base_source, out / "base", seed=1)
    result: dict = {"machine": machine_info(), "command": " ".join(sys.argv),
                    "base": {"source": args.base_source, "events": len(base), "seconds": time.perf_counter() - t0}}
    full, subset = out / f"events_{args.n}.h5", out / f"events_{args.subset}.h5"
    result["files"] = {"full": make_file(full, args.n, base, seed=2), "subset": make_file(subset, args.subset, base, seed=2)}
    print(json.dumps(result["files"]), flush=True)
    runs = {}
    for name, path, stream in (("memory_subset", subset, False), ("stream_subset", subset, True), ("stream_full", full, True)):
        cmd = [sys.executable, __file__, "--measure", str(path), "1" if stream else "0", "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        cmd += [f"--set={s}" for s in args.sets]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(runs[name]), flush=True)
    result["runs"] = runs
    ratio = runs["stream_subset"]["examples_per_second"] / runs["memory_subset"]["examples_per_second"]
    result["summary"] = {"stream_over_memory_examples_per_second": ratio,
                         "stream_full_peak_rss_mib": runs["stream_full"]["peak_rss_mib"],
                         "memory_subset_peak_rss_mib": runs["memory_subset"]["peak_rss_mib"],
                         "targets": {"stream_over_memory_at_least": 0.8, "peak_rss_mib_below": 2048},
                         "full_size": args.n >= 200_000}
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
