"""The monitoring state machine (geoseg.monitoring.state) over synthetic time series: pure numpy."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from geoseg.monitoring.state import (
    EPOCH,
    FOREST,
    HIGH,
    LOW,
    NO_ALERT,
    NON_FOREST,
    NONE,
    REJECTED,
    UNKNOWN,
    LateObservationError,
    Rules,
    event_keys,
    from_days,
    gfw_encode,
    initial_state,
    replay,
    to_days,
    update,
)

F, N = True, False
DEFAULT_RULES = Rules()


def run(series, baseline=True, rules=DEFAULT_RULES):
    """One pixel: series of (day, forest or None for cloudy); returns the final state and the steps."""
    state = initial_state(np.array([[baseline]]))
    steps = []
    for day, f in series:
        step = update(state, day, np.array([[bool(f)]]), np.array([[f is not None]]), rules)
        steps.append(step)
        state = step.state
    return state, steps


def px(a):
    return a[0, 0].item()


def test_dates():
    assert to_days("2015-01-01") == 1 and to_days(dt.date(2014, 12, 31)) == 0
    assert to_days(dt.datetime(2016, 1, 1, 12)) == 366
    assert from_days(366) == dt.date(2016, 1, 1) and from_days(NONE) is None and from_days(0) == EPOCH
    assert to_days(42) == 42


def test_low_then_high():
    state, steps = run([(10, F), (100, N), (150, N)])
    assert px(steps[1].started) and px(steps[1].state.confidence) == LOW
    assert px(steps[2].confirmed)
    assert px(state.confidence) == HIGH and px(state.first_loss) == 100 and px(state.last_loss) == 150
    assert px(state.n_loss) == 2 and px(state.last_clear) == 150
    assert px(gfw_encode(state)) == 30100
    assert px(gfw_encode(steps[1].state)) == 20100


def test_confirmation_window_edge_and_same_day():
    state, _ = run([(100, N), (190, N)])  # exactly 90 days: confirmed
    assert px(state.confidence) == HIGH
    state, _ = run([(100, N), (100, N)])  # same day (e.g. overlapping tiles): no confirmation
    assert px(state.confidence) == LOW and px(state.n_loss) == 1


def test_rejection_needs_two_forest_observations():
    state, _ = run([(100, N), (120, F)])
    assert px(state.confidence) == LOW and px(state.n_forest_again) == 1
    state, steps = run([(100, N), (120, F), (140, F)])
    assert px(steps[-1].rejected) and px(state.confidence) == REJECTED
    assert px(gfw_encode(state)) == 0
    # forest once, then loss again within the window: still confirmed
    state, _ = run([(100, N), (120, F), (150, N)])
    assert px(state.confidence) == HIGH
    # after a rejection the next loss starts a new event
    state, steps = run([(100, N), (120, F), (140, F), (160, N)])
    assert px(steps[-1].started) and px(state.confidence) == LOW and px(state.first_loss) == 160


def test_clouds_count_neither_way():
    state, _ = run([(100, N), (120, None), (130, None), (140, None)])
    assert px(state.confidence) == LOW and px(state.n_forest_again) == 0 and px(state.n_loss) == 1
    assert px(state.last_clear) == 100
    state, _ = run([(50, None), (60, None)], baseline=UNKNOWN)
    assert px(state.baseline) == UNKNOWN and px(state.last_clear) == NONE and px(state.confidence) == NO_ALERT


def test_new_event_after_expiry_and_after_regrowth():
    # an unconfirmed LOW event followed by a loss 200 days later: a new event, the old one expired
    state, steps = run([(100, N), (300, N)])
    assert px(steps[-1].expired) and px(steps[-1].started)
    assert px(state.confidence) == LOW and px(state.first_loss) == 300 and px(state.n_loss) == 1
    # confirmed, forest regrows (seen twice), cleared again > 180 days after the last loss: new event
    state, steps = run([(100, N), (150, N), (200, F), (220, F), (400, N)])
    assert px(steps[-1].started) and px(state.confidence) == LOW and px(state.first_loss) == 400
    # confirmed, regrowth but the new loss within 180 days: the same (HIGH) event, updated
    state, steps = run([(100, N), (150, N), (200, F), (220, F), (300, N)])
    assert px(steps[-1].updated) and px(state.confidence) == HIGH and px(state.last_loss) == 300
    assert px(state.first_loss) == 100 and px(state.n_loss) == 3
    # confirmed without regrowth: later losses never start a new event
    state, _ = run([(100, N), (150, N), (500, N)])
    assert px(state.confidence) == HIGH and px(state.first_loss) == 100


def test_baseline_rules():
    state, steps = run([(10, N), (50, N), (90, N)], baseline=UNKNOWN)  # first clear obs non-forest
    assert px(state.baseline) == NON_FOREST and px(state.confidence) == NO_ALERT
    state, steps = run([(10, None), (20, F), (50, N)], baseline=UNKNOWN)  # first clear obs forest
    assert px(state.baseline) == FOREST and px(state.confidence) == LOW and px(state.first_loss) == 50
    state, _ = run([(10, N), (20, N)], baseline=False)
    assert px(state.confidence) == NO_ALERT


def test_vectorised_pixels_independent():
    series = {  # pixel -> [(day, forest or None)]
        0: [(10, F), (100, N), (150, N)],
        1: [(10, F), (100, N), (120, F), (140, F)],
        2: [(10, F), (100, None), (150, N)],
        3: [(10, N), (100, N), (150, N)],
    }
    days = sorted({d for s in series.values() for d, _ in s})
    state = initial_state((1, 4))
    for d in days:
        f = np.zeros((1, 4), bool)
        v = np.zeros((1, 4), bool)
        for p, s in series.items():
            for day, obs in s:
                if day == d:
                    f[0, p], v[0, p] = bool(obs), obs is not None
        state = update(state, d, f, v).state
    assert list(state.confidence[0]) == [HIGH, REJECTED, LOW, NO_ALERT]
    assert list(state.first_loss[0]) == [100, 100, 150, NONE]
    assert list(state.baseline[0]) == [FOREST, FOREST, FOREST, NON_FOREST]


def test_update_is_pure_and_late_observations_replay():
    rng = np.random.default_rng(0)
    shape = (16, 16)
    obs = []
    for _k, day in enumerate(range(20, 800, 16)):
        forest = rng.random(shape) > 0.3
        valid = rng.random(shape) > 0.2
        obs.append((day, forest, valid))
    in_order = replay(initial_state(shape), obs)
    s0 = initial_state(shape)
    copy = {k: v.copy() for k, v in s0.arrays().items()}
    update(s0, 20, obs[0][1], obs[0][2])
    assert all(np.array_equal(copy[k], v) for k, v in s0.arrays().items())  # not modified
    # a late scene raises; replaying everything in date order gives the in-order state
    partial = replay(initial_state(shape), obs[:10] + obs[11:20])
    with pytest.raises(LateObservationError, match="replay"):
        update(partial, obs[10][0], obs[10][1], obs[10][2])
    shuffled = list(obs)
    rng.shuffle(shuffled)
    assert replay(initial_state(shape), shuffled).equals(in_order)
    assert in_order.n_observations == len(obs) and in_order.last_date == obs[-1][0]
    assert {LOW, HIGH, REJECTED} <= set(np.unique(in_order.confidence).tolist())


def test_event_keys_and_rules_validation():
    state, _ = run([(100, N)])
    assert px(event_keys(state)) == 100 * 2**40
    s = initial_state((3, 4))
    f = np.ones((3, 4), bool)
    s = update(s, 1, f).state
    f[1, 2] = False
    s = update(s, 50, f).state
    keys = event_keys(s, row_off=10, col_off=20, width=1000)
    assert keys[1, 2] == 50 * 2**40 + 11 * 1000 + 22 and (keys == -1).sum() == 11
    with pytest.raises(ValueError):
        Rules(reject_after=0)
    with pytest.raises(ValueError, match="shape"):
        update(initial_state((2, 2)), 1, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="before"):
        update(initial_state((1, 1)), "2014-01-01", np.ones((1, 1), bool))
