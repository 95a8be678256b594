"""``Named``: a numpy array whose axes carry names (and optionally coordinates).

Every analysis of :mod:`algeval.sim.analyses` returns its arrays as
:class:`Named`, so a result says what each axis is::

    Named(values (6, 4), axes=("layer", "head"), coords={"layer": [0, 1, 2, 3, 4, 5]})

Only what the analyses need: select by axis name (:meth:`sel`, :meth:`isel`),
reduce over a named axis (:meth:`mean`, :meth:`sum`), move axes
(:meth:`transpose`), and a JSON form (:meth:`to_json` / :meth:`from_json`)
in which non-finite floats become ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Named:
    """``values`` with one name per axis; ``coords[axis]`` (optional) labels that axis's entries."""

    values: np.ndarray
    axes: tuple[str, ...]
    coords: dict[str, list] = field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values)
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise ValueError(f"values have {self.values.ndim} dims but axes are {self.axes}")
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f"axis names repeat: {self.axes}")
        for k, c in list(self.coords.items()):
            if k not in self.axes:
                raise ValueError(f"coords for unknown axis {k!r} (axes {self.axes})")
            c = list(c)
            if len(c) != self.values.shape[self.axes.index(k)]:
                raise ValueError(f"coords[{k!r}] has {len(c)} entries for an axis of "
                                 f"{self.values.shape[self.axes.index(k)]}")
            self.coords[k] = c

    # -- shape -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.axes, self.values.shape))

    def axis(self, name: str) -> int:
        if name not in self.axes:
            raise KeyError(f"no axis {name!r}; axes are {self.axes}")
        return self.axes.index(name)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={s}" for a, s in zip(self.axes, self.values.shape))
        return f"Named({dims}; {self.values.dtype})"

    # -- selection -------------------------------------------------------------------
    def isel(self, **index) -> "Named":
        """Select by integer position along named axes; an int drops the axis."""
        sl: list[Any] = [slice(None)] * len(self.axes)
        for k, i in index.items():
            sl[self.axis(k)] = i
        vals = self.values[tuple(sl)]
        axes, coords = [], {}
        for a, i in zip(self.axes, sl):
            if isinstance(i, (int, np.integer)):
                continue
            axes.append(a)
            if a in self.coords:
                c = np.asarray(self.coords[a], dtype=object)[i]
                coords[a] = list(c) if np.ndim(c) else [c]
        return Named(vals, tuple(axes), coords)

    def sel(self, **labels) -> "Named":
        """Select by coordinate label (``sel(layer=3)`` picks the entry whose coord is 3)."""
        index = {}
        for k, lab in labels.items():
            if k not in self.coords:
                raise KeyError(f"axis {k!r} has no coords; use isel")
            c = self.coords[k]
            if isinstance(lab, (list, tuple)):
                index[k] = [c.index(x) for x in lab]
            else:
                index[k] = c.index(lab)
        return self.isel(**index)

    def transpose(self, *axes: str) -> "Named":
        order = [self.axis(a) for a in axes]
        rest = [i for i in range(len(self.axes)) if i not in order]
        order += rest
        return Named(np.transpose(self.values, order), tuple(self.axes[i] for i in order),
                     dict(self.coords))

    def _reduce(self, fn, axis: str | tuple[str, ...]) -> "Named":
        names = (axis,) if isinstance(axis, str) else tuple(axis)
        idx = tuple(self.axis(a) for a in names)
        vals = fn(self.values, axis=idx)
        keep = [a for a in self.axes if a not in names]
        return Named(vals, tuple(keep), {k: v for k, v in self.coords.items() if k in keep})

    def mean(self, axis) -> "Named":
        """NaN-ignoring mean over one or more named axes."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._reduce(np.nanmean, axis)

    def sum(self, axis) -> "Named":
        return self._reduce(np.nansum, axis)

    # -- JSON --------------------------------------------------------------------------
    def to_json(self) -> dict:
        """``{"axes", "shape", "dtype", "coords", "values"}``; NaN/inf become ``null``."""
        return {"axes": list(self.axes), "shape": list(self.values.shape), "dtype": str(self.values.dtype),
                "coords": {k: [_scalar(x) for x in v] for k, v in self.coords.items()},
                "values": _jsonable(self.values)}

    @classmethod
    def from_json(cls, d: dict) -> "Named":
        vals = np.asarray(_unjson(d["values"]), dtype=d.get("dtype", "float64") if d["shape"] else None)
        vals = vals.reshape(d["shape"])
        return cls(vals, tuple(d["axes"]), dict(d.get("coords", {})))


def _scalar(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _jsonable(a: np.ndarray):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


def _unjson(x):
    if isinstance(x, list):
        return [_unjson(v) for v in x]
    return np.nan if x is None else x


def to_jsonable(obj):
    """Recursively turn a result (dicts, lists, Named, numpy scalars/arrays) into JSON-ready data."""
    if isinstance(obj, Named):
        return obj.to_json()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj)
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    return _scalar(obj)
