"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint holds only tensors, numbers, strings and containers of them (the model state,
the named optimizers' states, EMA weights, RNG state, loop counters, the config as TOML text),
and is loaded with ``torch.load(weights_only=True)``, which refuses any other object: loading
never runs code.

Versions: 2 (today) holds ``optimizers`` (group name -> state), ``ema`` and ``rng``;
1 held one Adam state under ``optimizer``. Both load; readers handle the difference.
"""
from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from lvmkit.core.errors import CheckpointError

FORMAT = "lvmkit-checkpoint"
VERSION = 2
_READABLE = {"lvmkit-checkpoint": VERSION, "lvmkit-checkpoint-1": 1}  # format tag -> version


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed
    to disk, then renamed over the target, so a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_plain_pickle(path: Path) -> bool:
    """A pickle.dump file (protocol 2-5 header), not torch's zip format nor random bytes."""
    with open(path, "rb") as f:
        head = f.read(2)
    return not zipfile.is_zipfile(path) and len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted, or not an lvmkit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist; train the run first or check the path.")
    try:
        with warnings.catch_warnings():  # torch notes a pickle protocol it did not write; the load decides
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle opcodes, refused globals
        text = str(err)
        # The weights-only unpickler refuses a pickled class or function (any zip), or the
        # opcodes of a plain pickle.dump file (no zip): a foreign file, not a damaged one.
        if "Weights only load failed" in text and ("unsupported global" in text.lower() or _is_plain_pickle(path)):
            raise CheckpointError(
                f"{str(path)!r} is not an lvmkit checkpoint: it holds pickled Python objects (as torch.save of a whole model "
                "or pickle.dump writes), which lvmkit refuses unread because loading them can run code; pass a file from "
                "a run's checkpoints/ folder."
            ) from None
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is truncated or corrupted ({reason}); "
            "delete it and resume from the other checkpoint of the run, or retrain."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise CheckpointError(f"{str(path)!r} is not an lvmkit checkpoint; pass a file from a run's checkpoints/ folder.")
    version = int(payload.get("version", _READABLE[payload["format"]]))
    if version > VERSION:
        raise CheckpointError(f"{str(path)!r} was written by a newer lvmkit (checkpoint version {version}, this one reads "
                              f"up to {VERSION}); upgrade lvmkit.")
    payload["version"] = version
    return payload
