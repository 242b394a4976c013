"""One-Euro filter and per-track smoother: synthetic signals with a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest

from edge.smooth import OneEuroConfig, OneEuroFilter, PoseSmoother

FPS = 30.0


def run(f: OneEuroFilter, xs: np.ndarray, fps: float = FPS) -> np.ndarray:
    return np.stack([f(x, i / fps) for i, x in enumerate(xs)])


@pytest.mark.parametrize("shape", [(), (5,), (33, 2), (33, 3), (2, 33, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_signal_passes_unchanged(shape: tuple[int, ...], dtype: type) -> None:
    x: np.ndarray = np.full(shape, 123.5, dtype)
    out = run(OneEuroFilter(), np.stack([x] * 20))
    assert out.dtype == dtype and out.shape == (20, *shape)
    np.testing.assert_array_equal(out, np.broadcast_to(x, out.shape))


@pytest.mark.parametrize(("min_cutoff", "max_ratio"), [(1.0, 0.5), (0.3, 0.25)])
def test_noise_on_a_still_signal_is_reduced(min_cutoff: float, max_ratio: float) -> None:
    rng = np.random.default_rng(0)
    noisy = 100.0 + rng.normal(0.0, 2.0, (300, 33, 2))
    out = run(OneEuroFilter(OneEuroConfig(min_cutoff=min_cutoff, beta=0.0)), noisy)
    ratio = out[30:].std() / noisy[30:].std()
    assert ratio < max_ratio
    assert abs(out[30:].mean() - 100.0) < 0.5


@pytest.mark.parametrize(("beta", "max_lag_ticks"), [(0.0, 15), (0.05, 6), (1.0, 2)])
def test_step_is_followed_with_bounded_lag(beta: float, max_lag_ticks: int) -> None:
    xs = np.where(np.arange(90) < 30, 0.0, 100.0)[:, None]
    out = run(OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=beta)), xs)[:, 0]
    assert np.all(out[:30] == 0.0)
    assert np.all(np.diff(out) >= -1e-9) and np.all(out <= 100.0)   # no overshoot
    lag = int(np.argmax(out >= 90.0)) - 30   # ticks to reach 90 % of the step
    assert 0 <= lag <= max_lag_ticks
    assert out[-1] > 99.0


def test_beta_raises_responsiveness() -> None:
    t = np.arange(60) / FPS
    ramp = (300.0 * t)[:, None]   # 300 px/s
    errs = [np.abs(run(OneEuroFilter(OneEuroConfig(beta=b)), ramp)[-1, 0] - ramp[-1, 0])
            for b in (0.0, 0.01, 0.1)]
    assert errs[0] > errs[1] > errs[2]


def test_reset_forgets_state() -> None:
    f = OneEuroFilter()
    run(f, np.zeros((10, 3)))
    f.reset()
    assert f.shape is None
    np.testing.assert_array_equal(f(np.full(4, 7.0), 0.0), np.full(4, 7.0))   # new shape, t


def test_nan_elements_are_not_spread_and_resume() -> None:
    f = OneEuroFilter(OneEuroConfig(beta=0.0))
    x = np.array([[0.0, 0.0], [10.0, 10.0]])
    f(x, 0.0)
    gap = x + 5.0
    gap[1] = np.nan   # joint 1 missing
    out = f(gap, 0.1)
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
    # Back after 0.2 s: continues from the last estimate with the true elapsed time.
    out = f(x + 5.0, 0.2)
    assert np.all(np.isfinite(out))
    a = 1.0 / (1.0 + 1.0 / (2 * np.pi * 1.0) / 0.2)
    np.testing.assert_allclose(out[1], 10.0 + a * 5.0)
    # An element missing from the start passes through on first sight.
    g = OneEuroFilter()
    first = g(np.array([np.nan, 1.0]), 0.0)
    assert np.isnan(first[0]) and first[1] == 1.0
    np.testing.assert_allclose(g(np.array([4.0, 1.0]), 0.1), [4.0, 1.0])


def test_repeated_timestamp_keeps_state() -> None:
    f = OneEuroFilter()
    f(np.array([0.0]), 0.0)
    a = f(np.array([10.0]), 0.1)
    b = f(np.array([50.0]), 0.1)   # dt = 0: returns the current estimate
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(f(np.array([10.0]), 0.2)))


def test_input_not_mutated() -> None:
    f = OneEuroFilter()
    x = np.arange(6.0).reshape(3, 2)
    keep = x.copy()
    f(x, 0.0)
    out = f(x * 2, 0.1)
    np.testing.assert_array_equal(x, keep)
    assert out is not x


@pytest.mark.parametrize(("first", "second", "match"), [
    ((np.zeros(3), 1.0), (np.zeros(3), 0.5), "before the previous"),
    ((np.zeros(3), 1.0), (np.zeros(4), 2.0), "shape changed"),
    ((np.zeros(3), 1.0), (np.zeros(3, np.int64), 2.0), "floating point"),
    ((np.zeros(3), 1.0), (np.zeros(3), float("inf")), "finite"),
])
def test_filter_misuse(first: tuple[np.ndarray, float], second: tuple[np.ndarray, float],
                       match: str) -> None:
    f = OneEuroFilter()
    f(*first)
    with pytest.raises(ValueError, match=match):
        f(*second)


@pytest.mark.parametrize("kwargs", [{"min_cutoff": 0.0}, {"d_cutoff": -1.0}, {"beta": -0.1},
                                    {"min_cutoff": float("nan")}])
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="OneEuroConfig"):
        OneEuroConfig(**kwargs)


# ---------------------------------------------------------------- per-track smoother


def kp(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 33, 2), value, np.float32)


def test_smoother_keeps_one_filter_per_track() -> None:
    s = PoseSmoother(OneEuroConfig(beta=0.0))
    s.update(np.array([1, 2], np.int64), 0.0, np.concatenate([kp(0.0), kp(100.0)]))
    out = s.update(np.array([2, 1], np.int64), 0.1, np.concatenate([kp(110.0), kp(10.0)]))
    assert out.ids.tolist() == [2, 1] and out.world is None
    assert 100.0 < out.keypoints[0, 0, 0] < 110.0 and 0.0 < out.keypoints[1, 0, 0] < 10.0
    assert out.keypoints.dtype == np.float32


@pytest.mark.parametrize(("starts_2nd", "absent_between", "reset"), [
    (0.0, False, False),    # same track
    (0.15, False, True),    # ID re-used by a new track (first_seen changed)
    (None, True, True),     # ID left (absent) and came back
    (None, False, False),
])
def test_smoother_resets_on_track_start(starts_2nd: float | None, absent_between: bool,
                                        reset: bool) -> None:
    s = PoseSmoother(OneEuroConfig(beta=0.0))
    ids = np.array([7], np.int64)
    st = None if starts_2nd is None else np.array([0.0])
    s.update(ids, 0.0, kp(0.0), world=np.zeros((1, 33, 3), np.float32), starts=st)
    if absent_between:
        s.update(np.zeros(0, np.int64), 0.1, kp(0.0, 0))
        assert s.track_ids == []
    st2 = None if starts_2nd is None else np.array([starts_2nd])
    out = s.update(ids, 0.2, kp(50.0), world=np.ones((1, 33, 3), np.float32), starts=st2)
    assert bool(out.keypoints[0, 0, 0] == 50.0) == reset
    assert out.world is not None and bool(out.world[0, 0, 0] == 1.0) == reset


def test_smoother_nan_joints_do_not_spread() -> None:
    s = PoseSmoother()
    ids = np.array([1, 2], np.int64)
    s.update(ids, 0.0, np.concatenate([kp(0.0), kp(5.0)]))
    x = np.concatenate([kp(1.0), kp(6.0)])
    x[0, 3] = np.nan
    out = s.update(ids, 0.1, x)
    assert np.isnan(out.keypoints[0, 3]).all()
    assert np.isfinite(np.delete(out.keypoints[0], 3, axis=0)).all()
    assert np.isfinite(out.keypoints[1]).all()


@pytest.mark.parametrize(("ids", "kps", "world", "match"), [
    (np.array([1, 1], np.int64), kp(0.0, 2), None, "unique"),
    (np.array([1], np.int32), kp(0.0), None, "int64"),
    (np.array([1], np.int64), kp(0.0, 2), None, "keypoints must be"),
    (np.array([1], np.int64), kp(0.0), np.zeros((1, 33, 2), np.float32), "world must be"),
])
def test_smoother_misuse(ids: np.ndarray, kps: np.ndarray, world: np.ndarray | None,
                         match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PoseSmoother().update(ids, 0.0, kps, world)


def test_smoother_time_and_reset() -> None:
    s = PoseSmoother()
    ids = np.array([1], np.int64)
    s.update(ids, 1.0, kp(0.0))
    with pytest.raises(ValueError, match="monotonic"):
        s.update(ids, 0.5, kp(0.0))
    s.reset()
    assert s.track_ids == []
    assert s.update(ids, 0.5, kp(3.0)).keypoints[0, 0, 0] == 3.0
