"""The packed layout of a batch of irregular time series, and helpers to build and read it.

See the package docstring (:mod:`lvmkit.timeseries`) for the layout itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from lvmkit.core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from lvmkit.data.scaling import Scaler

#: Codes of the mask channels.
ABSENT, OBSERVED, HELD_OUT = 0.0, 1.0, 2.0


def pack(times: Sequence[np.ndarray], values: Sequence[np.ndarray], codes: Sequence[np.ndarray] | None = None, *,
         length: int | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """Pack N series into one float32 array (N, T, 1 + 2D).

    Args:
        times: per series, its times (n_i,), strictly increasing.
        values: per series, its values (n_i, D); entries whose code is 0 may be NaN.
        codes: per series, (n_i, D) codes: 1 observed, 2 held out (a target the model must not
            see), 0 absent. Default: 1 everywhere, which then forbids NaN values.
        length: T, at least the longest series (default: the longest series).
        names: series names for error messages (default: their positions).

    Raises:
        DataError: times not strictly increasing, NaN values without a mask, a series with
            fewer than two observed times, or infinite values.
    """
    n = len(times)
    if len(values) != n or (codes is not None and len(codes) != n):
        raise DataError(f"pack() got {n} time arrays but {len(values)} value arrays"
                        f"{'' if codes is None else f' and {len(codes)} code arrays'}; pass one of each per series.")
    if n == 0:
        raise DataError("pack() got no series; pass at least one.")
    names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
    vals = [np.asarray(v, dtype=np.float64).reshape(len(np.asarray(t)), -1) for t, v in zip(times, values)]
    d = vals[0].shape[1]
    longest = max(len(np.asarray(t)) for t in times)
    t_len = longest if length is None else length
    if t_len < longest:
        raise DataError(f"pack(length={length}) is shorter than the longest series ({longest} rows); raise length.")
    out = np.zeros((n, t_len, 1 + 2 * d), dtype=np.float32)
    for i, (t, v) in enumerate(zip(times, vals)):
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        name = names[i]
        if v.shape[1] != d:
            raise DataError(f"Series {name!r} has {v.shape[1]} features but the first series has {d}; every series needs the same features.")
        if codes is None:
            if np.isnan(v).any():
                raise DataError(f"Series {name!r} holds {int(np.isnan(v).sum())} NaN values but no mask was given; "
                                "pass codes (0 where a value is missing) or impute the values.")
            c = np.ones_like(v)
        else:
            c = np.asarray(codes[i], dtype=np.float64).reshape(v.shape)
            if not np.isin(c, (ABSENT, OBSERVED, HELD_OUT)).all():
                raise DataError(f"Series {name!r} has mask codes other than 0, 1, 2; use 0 absent, 1 observed, 2 held out.")
            nan_present = np.isnan(v) & (c != ABSENT)
            if nan_present.any():
                raise DataError(f"Series {name!r} holds {int(nan_present.sum())} NaN values where its mask says the value "
                                "is present; set their mask code to 0 or impute them.")
        if not np.isfinite(t).all():
            raise DataError(f"Series {name!r} has NaN or infinite times; every row needs a finite time.")
        if np.isinf(v[c != ABSENT]).any():
            raise DataError(f"Series {name!r} holds infinite values; remove them or mark them missing.")
        if len(t) > 1 and not (np.diff(t) > 0).all():
            k = int(np.argmax(np.diff(t) <= 0)) + 1
            raise DataError(f"Series {name!r} has non-increasing times ({t[k]:g} after {t[k - 1]:g}); sort each series "
                            "by time and merge rows that share a time.")
        n_obs = int((c == OBSERVED).any(axis=1).sum())
        if n_obs < 2:
            raise DataError(f"Series {name!r} has {n_obs} observed time{'s' if n_obs != 1 else ''}; every series needs "
                            "at least two (drop it or supply more observations).")
        k = len(t)
        out[i, :k, 0] = t
        out[i, k:, 0] = t[-1]  # padding repeats the last time: times stay non-decreasing
        out[i, :k, 1 : 1 + d] = np.where(c != ABSENT, v, 0.0)
        out[i, :k, 1 + d :] = c
    return out


def unpack(x: np.ndarray | Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The inverse of :func:`pack`: per series (times (n,), values (n, D), codes (n, D)),
    padding removed. Values whose code is 0 come back as NaN."""
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
    d = (x.shape[-1] - 1) // 2
    out = []
    for row in x:
        c = row[:, 1 + d :]
        rows = np.nonzero((c != ABSENT).any(axis=1))[0]
        k = int(rows[-1]) + 1 if len(rows) else 0
        v = np.where(c[:k] != ABSENT, row[:k, 1 : 1 + d], np.nan)
        out.append((row[:k, 0].copy(), v, c[:k].copy()))
    return out


def series_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(T, C) from a data set's example shape: (T, C), or (1, T, C) as load_data hands 3-D
    arrays on (it adds a channel axis to what it takes for images).

    Raises:
        DataError: the shape is not that of packed series (C = 1 + 2D, D >= 1).
    """
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[1] < 3 or shape[1] % 2 == 0:
        raise DataError(f"The time-series models read packed series of shape (T, 1 + 2D), but the data has examples of "
                        f"shape {tuple(input_shape)}; use a time-series data set (data.name = 'spirals', 'series-csv', ...).")
    return shape[0], shape[1]


def feature_units(scaler: Optional["Scaler"], d: int) -> tuple[np.ndarray, np.ndarray]:
    """(shift (D,), span (D,)) of the value channels under ``scaler`` (a
    :class:`lvmkit.data.scaling.Scaler` fitted on packed series, or None for values as given):
    a value in the data's units is ``scaled * span + shift``."""
    if scaler is None:
        return np.zeros(d), np.ones(d)
    c = 1 + 2 * d
    shift = np.broadcast_to(np.asarray(scaler.shift, dtype=np.float64), (c,))
    span = np.broadcast_to(np.asarray(scaler.span, dtype=np.float64), (c,))
    return shift[1 : 1 + d].copy(), span[1 : 1 + d].copy()


def channels(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split a packed batch into times (B, T), values (B, T, D) and codes (B, T, D)."""
    x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
    d = (x.shape[-1] - 1) // 2
    return x[..., 0], x[..., 1 : 1 + d], x[..., 1 + d :]


def compact(t: Tensor, rows: Tensor, *tensors: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Move the selected rows of every series to the front, in time order.

    Args:
        t: times (B, T); rows: (B, T) bool, the rows to keep; tensors: (B, T, ...) to gather.

    Returns:
        times (B, K) with K the largest count (a series' unused slots repeat its last kept time,
        or its first time when it keeps none), valid (B, K) bool, and the gathered tensors
        (zero in unused slots).
    """
    count = rows.sum(1)
    k = max(int(count.max()), 1)
    # Stable sort of "not selected" puts selected rows first, keeping their order.
    order = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :k]
    valid = torch.arange(k, device=t.device)[None, :] < count[:, None]
    tc = t.gather(1, order)
    last = tc.gather(1, (count - 1).clamp(min=0)[:, None])
    tc = torch.where(valid, tc, torch.where(count[:, None] > 0, last, t[:, :1]))
    out = []
    for z in tensors:
        idx = order.view(*order.shape, *([1] * (z.dim() - 2))).expand(-1, -1, *z.shape[2:])
        g = z.gather(1, idx)
        out.append(g * valid.view(*valid.shape, *([1] * (z.dim() - 2))).to(g.dtype))
    return tc, valid, out



def with_queries(x: Tensor, times: Tensor) -> Tensor:
    """A packed batch with extra held-out rows (values 0) at ``times`` (B, G), merged into each
    series in time order; padding stays last and keeps the largest time."""
    x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
    d = (x.shape[-1] - 1) // 2
    q = x.new_zeros(x.shape[0], times.shape[1], x.shape[-1])
    q[..., 0] = times
    q[..., 1 + d :] = HELD_OUT
    both = torch.cat([x, q], dim=1)
    t, _, c = channels(both)
    pad = (c == 0).all(-1)
    order = torch.argsort(torch.where(pad, torch.full_like(t, float("inf")), t), dim=1, stable=True)
    out = both.gather(1, order[..., None].expand_as(both))
    pad = pad.gather(1, order)
    top = torch.where(pad, torch.full_like(t, -float("inf")), out[..., 0]).amax(1, keepdim=True)
    out[..., 0] = torch.where(pad, top, out[..., 0])
    return out

__all__ = ["ABSENT", "HELD_OUT", "OBSERVED", "channels", "compact", "feature_units", "pack", "series_shape", "unpack", "with_queries"]
