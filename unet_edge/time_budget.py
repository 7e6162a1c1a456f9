"""The arithmetic of ``train --time-budget`` (Ultralytics' ``time``): budget strings, the epoch
count that fits a measured epoch cost, and the LR-schedule warp that lets a shortened or extended
run still complete its schedule. The trainer (:mod:`unet_edge.train`) measures; this module plans.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UsageError

#: With a time budget every plan ends at ``(1 - TIME_BUDGET_MARGIN) * budget``; an epoch-end
#: forecast re-plans only when it passes ``(1 - TIME_BUDGET_MARGIN / 2) * budget`` (hysteresis: a
#: few percent of timing noise does not cost an epoch).
TIME_BUDGET_MARGIN = 0.08
#: ``train --time-budget`` without ``--epochs``: the bound on the epochs, high enough that the budget
#: sets the length (Ultralytics' ``time`` overrides ``epochs`` alike). Without a budget the bound is
#: :class:`unet_edge.train.TrainConfig`'s ``epochs``.
BUDGET_EPOCHS_BOUND = 1000
#: :func:`plan_with_room` looks this many times past the ``--epochs`` bound for what the budget would hold.
BUDGET_ROOM_FACTOR = 10

_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_time_budget(text: str | float | int) -> float:
    """A time budget in seconds from ``90s``, ``20m``, ``1.5h`` or plain minutes (``45``, ``45.5``).

    Units: ``s``/``sec``/``seconds``, ``m``/``min``/``minutes``, ``h``/``hr``/``hours`` (any case).
    A number without a unit (str, int or float) is minutes (Ultralytics' ``time`` takes hours).

    Raises:
        UsageError: unparsable text, an unknown unit, or a budget that is not positive and finite.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "m"
    else:
        m = _BUDGET_RE.match(str(text))
        if not m or m.group(2).lower() not in ("", *_UNITS):
            raise UsageError(f"--time-budget must look like 90s, 20m, 1.5h or plain minutes (45); got {text!r}")
        value, unit = float(m.group(1)), m.group(2).lower() or "m"
    seconds = value * _UNITS[unit]
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--time-budget must be positive; got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``90s``, ``10m``, ``1.5h``: a duration in seconds, short, as :func:`parse_time_budget` reads it."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.3g}m"
    return f"{seconds / 3600:.3g}h"


@dataclass(frozen=True)
class LowResPhase:
    """``train --low-res``: the epochs that start before schedule position ``share`` (a fraction of
    the LR schedule) train at low resolution, cost ``train_s`` seconds each and are not validated.
    ``done`` is where the schedule stands (fraction in [0, 1)) at the first epoch being planned;
    the planned epochs run the rest of it evenly (:class:`ScheduleWarp`)."""

    share: float
    train_s: float
    done: float = 0.0

    def epochs(self, n: int) -> int:
        """Of ``n`` epochs that share the rest of the schedule evenly, how many start before ``share``."""
        if n <= 0 or self.share <= self.done:
            return 0
        return min(n, math.ceil(n * (self.share - self.done) / (1 - self.done) - 1e-9))


def plan_epochs(available_s: float, first_epoch: int, max_epochs: int, train_s: float, val_s: float,
                val_every: int = 1, low_res: LowResPhase | None = None) -> int:
    """The largest final epoch N in ``[first_epoch, max_epochs]`` whose epochs ``first_epoch..N``
    fit in ``available_s`` seconds (:func:`epochs_cost`). At least ``first_epoch``, even when
    that one does not fit."""
    best = first_epoch
    for e in range(first_epoch, max_epochs + 1):  # the cost grows with e: stop at the first that does not fit
        if epochs_cost(first_epoch, e, train_s, val_s, val_every, low_res) > available_s:
            break
        best = e
    return best


def plan_with_room(available_s: float, first_epoch: int, bound: int, train_s: float, val_s: float,
                   val_every: int = 1, low_res: LowResPhase | None = None) -> tuple[int, int | None]:
    """:func:`plan_epochs` up to the ``--epochs`` ``bound``, and the room: when the bound and not the
    budget ends that plan, the final epoch ``available_s`` would hold without it (looking up to
    :data:`BUDGET_ROOM_FACTOR` x ``bound``), else None. One scan: the costs grow with the epoch, so
    the bounded plan is the unbounded one cut at ``bound``."""
    fits = plan_epochs(available_s, first_epoch, max(bound, first_epoch) * BUDGET_ROOM_FACTOR, train_s, val_s,
                       val_every, low_res)
    return max(first_epoch, min(fits, bound)), (fits if fits > bound else None)


@dataclass
class ScheduleWarp:
    """Maps a real optimizer step to the step of the LR schedule it runs at (piecewise linear).

    The schedule has ``total`` steps. From real step ``real0`` (where the schedule stood at
    ``virt0``) each real step advances the schedule by ``rate`` steps. :meth:`fit` re-aims the rest
    of the schedule at a new real end, so a shortened run still ends on the schedule's final LR.
    """

    total: int
    real0: int = 0
    virt0: float = 0.0
    rate: float = 1.0

    @property
    def identity(self) -> bool:
        return self.rate == 1.0 and self.virt0 == self.real0

    def __call__(self, step: int) -> float:
        return min(float(self.total), self.virt0 + (step - self.real0) * self.rate)

    def fit(self, step: int, virt: float, end_step: int) -> None:
        """From real ``step`` (schedule at ``virt``), reach the schedule's end at real ``end_step``."""
        self.real0, self.virt0 = step, float(virt)
        self.rate = (self.total - self.virt0) / max(1, end_step - step)
        if self.virt0 == step and end_step == self.total:
            self.virt0, self.rate = float(step), 1.0


def epochs_cost(first: int, last: int, train_s: float, val_s: float, val_every: int,
                low_res: LowResPhase | None = None) -> float:
    """Seconds of epochs ``first..last`` (``last`` final): each costs ``train_s`` plus ``val_s`` when
    it validates (every ``val_every``-th epoch and always the final one). With ``low_res`` the
    first :meth:`LowResPhase.epochs` of them cost ``low_res.train_s`` instead and do not validate."""
    n = last - first + 1
    if n <= 0:
        return 0.0
    n_low = low_res.epochs(n) if low_res is not None else 0
    a = first + n_low  # multiples of val_every in [a, last), then the final epoch: O(1), plans scan thousands
    n_val = max(0, (last - 1) // val_every - (a - 1) // val_every) + 1
    low_s = low_res.train_s if low_res is not None else 0.0
    return n_low * low_s + (n - n_low) * train_s + n_val * val_s
