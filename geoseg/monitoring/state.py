"""The per-pixel forest-loss monitoring state machine: pure numpy, no I/O.

The state of an area of interest is a handful of arrays of one shape (one element per pixel,
:class:`PixelState`); :func:`update` applies one observation (a date, a forest mask and a
clear/valid mask) and returns a *new* state plus masks of what happened (:class:`Step`).
Dates are integer days since 2014-12-31 (:data:`EPOCH`, the Global Forest Watch convention;
:func:`to_days`); ``NONE`` (-1) means "no such date".

Rules (parameters in :class:`Rules`):

- **Baseline.** A pixel's baseline is given (``initial_state(baseline)``) or set by its first clear
  observation (forest -> 1, otherwise 0). Only baseline-forest pixels can alert; the baseline
  never changes afterwards.
- **Cloudy / nodata** observations (``valid`` False) count neither way: nothing changes, not even
  ``last_clear``.
- **First loss.** A clear non-forest observation of a baseline-forest pixel with no open event
  (none, or a rejected one) starts an event: confidence ``LOW``, ``first_loss`` = that date.
- **Confirmation.** A further loss observation on a later date within ``confirm_days`` (90) of
  ``first_loss`` makes it ``HIGH``. A loss observation *after* that window on a still-``LOW``
  event starts a new event at the new date (the old one expired unconfirmed).
- **Rejection.** ``reject_after`` (2) clear forest observations after ``first_loss`` and before
  confirmation make the event ``REJECTED``; the next loss observation starts a new event.
- **Confirmed events** stay ``HIGH``; later loss observations update ``last_loss``/``n_loss``.
  Forest seen again ``reject_after`` times counts as regrowth, and a loss observation more
  than ``new_event_days`` (180) after the event's ``last_loss`` then starts a new event.
- **Order.** Observations must come in date order (same-day observations are fine: a same-day
  repeat never confirms). An observation older than the state's ``last_date`` raises
  :class:`LateObservationError`; the caller replays from the recorded observations
  (:func:`replay`), which yields exactly the state an in-order run would have.

Outputs helpers: :func:`gfw_encode` (GFW's uint16 ``confidence*10000 + days``),
:func:`event_keys` (a deterministic per-pixel event key: first date + pixel index).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from geoseg.errors import LateObservationError

__all__ = ["EPOCH", "NONE", "NO_ALERT", "LOW", "HIGH", "REJECTED", "UNKNOWN", "Rules", "PixelState", "Step",
           "LateObservationError", "to_days", "from_days", "initial_state", "update", "replay", "gfw_encode",
           "event_keys", "CONFIDENCE_NAMES"]

EPOCH = _dt.date(2014, 12, 31)
NONE = -1
#: confidence codes
NO_ALERT, LOW, HIGH, REJECTED = 0, 1, 2, 3
CONFIDENCE_NAMES = {NO_ALERT: "none", LOW: "low", HIGH: "high", REJECTED: "rejected"}
#: baseline codes (and FOREST / NON_FOREST)
NON_FOREST, FOREST, UNKNOWN = 0, 1, 255

#: what :func:`to_days` accepts: a date, a datetime, an ISO date string or days since :data:`EPOCH`
DateLike = _dt.date | _dt.datetime | str | int


def to_days(d: DateLike) -> int:
    """Days since 2014-12-31 (ints pass through); ``'2021-03-04'`` strings accepted."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d)
    if isinstance(d, str):
        d = _dt.date.fromisoformat(d[:10])
    if isinstance(d, _dt.datetime):
        d = d.date()
    if not isinstance(d, _dt.date):
        raise TypeError(f"{d!r} is not a date")
    return (d - EPOCH).days


def from_days(days: int) -> _dt.date | None:
    return None if days == NONE else EPOCH + _dt.timedelta(days=int(days))


@dataclass(frozen=True)
class Rules:
    confirm_days: int = 90
    reject_after: int = 2
    new_event_days: int = 180

    def __post_init__(self) -> None:
        if self.confirm_days < 0 or self.new_event_days < 0:
            raise ValueError("confirm_days and new_event_days must be >= 0")
        if self.reject_after < 1:
            raise ValueError("reject_after must be >= 1")


@dataclass(frozen=True)
class PixelState:
    """Per-pixel monitoring state (arrays of one shape; treat as immutable)."""

    baseline: np.ndarray  # uint8: FOREST, NON_FOREST or UNKNOWN
    confidence: np.ndarray  # uint8: NO_ALERT, LOW, HIGH, REJECTED (of the current event)
    first_loss: np.ndarray  # int32 days: first loss observation of the current event, NONE if none
    last_loss: np.ndarray  # int32 days: latest loss observation of the current event
    n_loss: np.ndarray  # uint16: loss observations of the current event
    n_forest_again: np.ndarray  # uint8: clear forest observations since first_loss
    last_clear: np.ndarray  # int32 days: latest clear (valid) observation, NONE if none
    last_date: int = NONE  # latest observation date applied (any pixel)
    n_observations: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.baseline.shape

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("baseline", "confidence", "first_loss", "last_loss", "n_loss",
                                              "n_forest_again", "last_clear")}

    def equals(self, other: PixelState) -> bool:
        return (self.last_date == other.last_date and self.n_observations == other.n_observations
                and all(np.array_equal(a, b) for a, b in zip(self.arrays().values(), other.arrays().values())))


@dataclass(frozen=True)
class Step:
    """What one observation did (boolean masks of the state's shape)."""

    state: PixelState
    started: np.ndarray  # a new LOW event began
    confirmed: np.ndarray  # LOW -> HIGH
    rejected: np.ndarray  # LOW -> REJECTED
    expired: np.ndarray  # a LOW event was superseded by a new one (loss after the confirmation window)
    updated: np.ndarray  # a HIGH event saw another loss observation
    clear: np.ndarray  # the observation was valid here


def initial_state(shape_or_baseline: tuple[int, ...] | np.ndarray) -> PixelState:
    """An empty state: baseline UNKNOWN (a shape) or given (an array: truthy = forest; UNKNOWN kept)."""
    if isinstance(shape_or_baseline, tuple):
        baseline = np.full(shape_or_baseline, UNKNOWN, dtype=np.uint8)
    else:
        b = np.asarray(shape_or_baseline)
        baseline = np.where(b == UNKNOWN, UNKNOWN, np.where(b.astype(bool), FOREST, NON_FOREST)).astype(np.uint8)
    shape = baseline.shape
    return PixelState(
        baseline=baseline,
        confidence=np.zeros(shape, np.uint8),
        first_loss=np.full(shape, NONE, np.int32),
        last_loss=np.full(shape, NONE, np.int32),
        n_loss=np.zeros(shape, np.uint16),
        n_forest_again=np.zeros(shape, np.uint8),
        last_clear=np.full(shape, NONE, np.int32),
    )


def update(state: PixelState, date: DateLike, forest: np.ndarray, valid: np.ndarray | None = None,
           rules: Rules = Rules()) -> Step:
    """Apply one observation; return the new state and what changed. ``state`` is not modified."""
    d = to_days(date)
    if d < 0:
        raise ValueError(f"observation date {date!r} is before {EPOCH}; dates are days since {EPOCH}")
    if state.last_date != NONE and d < state.last_date:
        raise LateObservationError(
            f"observation of {from_days(d)} is older than the state's last date {from_days(state.last_date)}; "
            "replay the recorded observations in date order"
        )
    forest = np.asarray(forest).astype(bool)
    clear = np.ones(state.shape, bool) if valid is None else np.asarray(valid).astype(bool)
    if forest.shape != state.shape or clear.shape != state.shape:
        raise ValueError(f"observation shape {forest.shape}/{clear.shape} does not match the state {state.shape}")

    s = {k: v.copy() for k, v in state.arrays().items()}
    base, conf = s["baseline"], s["confidence"]
    first, last = s["first_loss"], s["last_loss"]
    n_loss, n_fa = s["n_loss"], s["n_forest_again"]

    # baseline from the first clear observation; that observation cannot itself be a loss
    new_base = clear & (base == UNKNOWN)
    base[new_base] = np.where(forest[new_base], FOREST, NON_FOREST)
    monitored = clear & (base == FOREST) & ~new_base
    loss = monitored & ~forest
    seen_forest = monitored & forest
    later = d > last  # a repeat must be on a later date than the event's last loss

    low, high = conf == LOW, conf == HIGH
    confirmed = loss & low & later & (d - first <= rules.confirm_days)
    expired = loss & low & (d - first > rules.confirm_days)
    regrown = high & (n_fa >= rules.reject_after)
    reopened = loss & regrown & (d - last > rules.new_event_days)
    updated = loss & high & later & ~reopened
    started = (loss & ((conf == NO_ALERT) | (conf == REJECTED))) | expired | reopened

    # forest seen again: counts towards rejection (LOW) or regrowth (HIGH)
    again = seen_forest & (low | high) & (d > first)
    n_fa[again] = np.minimum(n_fa[again].astype(np.int32) + 1, 255).astype(np.uint8)
    rejected = again & low & (n_fa >= rules.reject_after)

    conf[confirmed] = HIGH
    n_loss[confirmed | updated] += 1
    last[confirmed | updated] = d
    conf[rejected] = REJECTED

    conf[started] = LOW
    first[started] = d
    last[started] = d
    n_loss[started] = 1
    n_fa[started] = 0

    s["last_clear"][clear] = d
    new = PixelState(**s, last_date=max(state.last_date, d), n_observations=state.n_observations + 1)
    return Step(new, started, confirmed, rejected, expired, updated, clear)


def replay(initial: PixelState, observations: Iterable[tuple[DateLike, np.ndarray, np.ndarray | None]],
           rules: Rules = Rules()) -> PixelState:
    """Apply ``(date, forest, valid)`` observations in date order (stable for same-day ones)."""
    obs = sorted(observations, key=lambda o: to_days(o[0]))
    state = initial
    for date, forest, valid in obs:
        state = update(state, date, forest, valid, rules).state
    return state


def gfw_encode(state: PixelState) -> np.ndarray:
    """GFW date-confidence encoding (uint16): ``confidence*10000 + days since 2014-12-31``.

    GFW's confidence digits: 2 = low, 3 = high; pixels without a LOW/HIGH event are 0.
    """
    out = np.zeros(state.shape, np.uint16)
    for code, digit in ((LOW, 2), (HIGH, 3)):
        m = state.confidence == code
        out[m] = digit * 10000 + state.first_loss[m].astype(np.int64)
    return out


def event_keys(state: PixelState, row_off: int = 0, col_off: int = 0, width: int | None = None) -> np.ndarray:
    """A deterministic int64 key per pixel for its current event: ``first_loss * 2**40 + pixel index``.

    The pixel index is ``(row + row_off) * width + (col + col_off)`` in the AOI's full grid, so keys
    are the same whatever window the state was computed in; -1 where there is no event.
    """
    if len(state.shape) != 2:
        raise ValueError("event_keys needs a 2-D state")
    h, w = state.shape
    width = w if width is None else int(width)
    r, c = np.mgrid[0:h, 0:w]
    idx = (r + row_off).astype(np.int64) * width + (c + col_off)
    has = state.first_loss != NONE
    return np.where(has, state.first_loss.astype(np.int64) * (1 << 40) + idx, -1)
