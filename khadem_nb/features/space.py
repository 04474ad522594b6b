"""Search spaces for ``JobFunction.optimize``: what each parameter of a trial may take.

``kn.uniform(low, high)`` and ``kn.loguniform(low, high)`` are floats, ``kn.intrange(low, high)``
whole numbers (both ends included), a list a choice among its values. A space is checked when it
is given, written as canonical JSON (a study found again by its name must have the same one),
and handed to Optuna as its distributions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .telemetry import METRIC_NAME


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def uniform(low: float, high: float) -> Uniform:
    """Floats from ``low`` to ``high``, evenly."""
    lo, hi = _number(low, "uniform's low"), _number(high, "uniform's high")
    if not lo < hi:
        raise ConfigError(f"uniform(low, high) needs low < high, got uniform({low!r}, {high!r})")
    return Uniform(lo, hi)


def loguniform(low: float, high: float) -> Uniform:
    """Floats from ``low`` to ``high`` on a log scale (both above 0)."""
    lo, hi = _number(low, "loguniform's low"), _number(high, "loguniform's high")
    if not 0 < lo < hi:
        raise ConfigError(f"loguniform(low, high) needs 0 < low < high, got loguniform({low!r}, {high!r})")
    return Uniform(lo, hi, log=True)


def intrange(low: int, high: int) -> IntRange:
    """Whole numbers from ``low`` to ``high``, both included."""
    for value, what in ((low, "low"), (high, "high")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"intrange's {what} must be a whole number, got {value!r}")
    if low > high:
        raise ConfigError(f"intrange(low, high) needs low <= high, got intrange({low!r}, {high!r})")
    return IntRange(low, high)


Dimension = Uniform | IntRange | tuple[Any, ...]


def check_space(space: Any) -> dict[str, Dimension]:
    """``space`` checked: a non-empty dict of parameter names (identifiers) to a dimension."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("a search space is a non-empty dict like {'lr': kn.loguniform(1e-4, 1e-1), "
                          f"'depth': kn.intrange(2, 8), 'opt': ['adam', 'sgd']}}, got {space!r}")
    checked: dict[str, Dimension] = {}
    for name, dimension in space.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            raise ConfigError(f"a search space's parameter names are identifiers, got {name!r}")
        if isinstance(dimension, Uniform | IntRange):
            checked[name] = dimension
        elif isinstance(dimension, list | tuple) and dimension:
            choices = tuple(dimension)
            if not all(c is None or isinstance(c, str | int | float | bool) for c in choices):
                raise ConfigError(f"the choices of {name!r} are None, bools, numbers or text, "
                                  f"got {dimension!r}")
            checked[name] = choices
        else:
            raise ConfigError(f"{name!r}: a dimension is kn.uniform(...), kn.loguniform(...), "
                              f"kn.intrange(...) or a non-empty list of choices, got {dimension!r}")
    return checked


def space_text(space: dict[str, Dimension]) -> str:
    """The space as canonical JSON: how a study stored by name is compared with a new call."""
    def one(dimension: Dimension) -> Any:
        if isinstance(dimension, Uniform):
            return ["loguniform" if dimension.log else "uniform", dimension.low, dimension.high]
        if isinstance(dimension, IntRange):
            return ["intrange", dimension.low, dimension.high]
        return ["choice", list(dimension)]

    return json.dumps({name: one(d) for name, d in space.items()}, sort_keys=True, separators=(",", ":"))


def distributions(space: dict[str, Dimension]) -> dict[str, Any]:
    """The space as Optuna's distributions (Optuna imported here: the ``tune`` extra)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made: dict[str, Any] = {}
    for name, dimension in space.items():
        if isinstance(dimension, Uniform):
            made[name] = FloatDistribution(dimension.low, dimension.high, log=dimension.log)
        elif isinstance(dimension, IntRange):
            made[name] = IntDistribution(dimension.low, dimension.high)
        else:
            made[name] = CategoricalDistribution(dimension)
    return made
