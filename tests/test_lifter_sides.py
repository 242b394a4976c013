"""The 3D stage's runtime guards on real video: left/right label flips undone per track
(:class:`edge.lift3d.LeftRight`) without undoing real turns, and steady limbs on a short track
(:class:`edge.lift3d.LimbLengths` with its prior).

The demo clip's tracked 2D (float landmark model, ``edge.bench.lift.demo_tracks``) is read from
``cache/lifter/`` (built on first use, as for ``edge-bench --lift``). Its first person (track 0)
is labelled the other way round by the 2D model in frames 68-72 while facing the camera, then
turns gradually to side-on (frames 75-168, shoulder width from 0.7 of the torso length to 0);
track 14 is someone walking in, seen for 29 frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from test_lift3d import SIT, WALK, project

from edge.bench.lift import _DevViews, accuracy, demo_tracks, limb_cv, multi_tracks
from edge.lift3d import (
    COCO17_FLIP,
    LIMB_PRIOR_FRAMES,
    N_JOINTS,
    LeftRight,
    Lifter,
    LifterStage,
    LimbLengths,
    WorldLandmarksStage,
    lift_both_sides,
    paired_sides,
    swap_sides,
)
from edge.runtime import Manifest
from edge.skeleton import BLAZEPOSE_FLIP, COCO17_FROM_BLAZEPOSE
from edge.types import Poses2D

#: Demo clip frames of track 0 the 2D model labels the other way round.
FLIPPED = [68, 69, 70, 71, 72]


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return demo_tracks()


def _swaps(kp: npt.NDArray[np.float32], conf: npt.NDArray[np.float32],
           track: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    guard = LeftRight()
    return np.concatenate([guard(kp[i:i + 1], conf[i:i + 1], [int(track[i])])
                           for i in range(len(kp))])


def test_label_flips_are_undone_and_the_real_turn_kept(demo: dict[str, Any]) -> None:
    sw = _swaps(demo["kp"], demo["conf"], demo["track"])
    t0 = demo["track"] == 0
    frames = demo["frame"][t0]
    assert frames[sw[t0]].tolist() == FLIPPED
    # the flip is real in the 2D: the shoulders trade sides for exactly those frames
    kp = demo["kp"][t0]
    width = kp[:, 5, 0] - kp[:, 6, 0]
    assert (width[np.isin(frames, FLIPPED)] < 0).all()
    # the gradual turn to side-on that follows is left alone, as is every other track
    turn = (frames >= 75) & (frames <= 168)
    assert width[turn][:10].mean() > 3 * abs(width[turn][-10:].mean())
    assert not sw[t0][turn].any()
    assert not sw[~t0].any()
    # fixed, the track's shoulders keep their side throughout the flip
    fixed = np.where(sw[t0][:, None], kp[:, COCO17_FLIP, 0], kp[:, :, 0])
    near = (frames >= 60) & (frames <= 80)
    assert ((fixed[near, 5] - fixed[near, 6]) > 0).all()


@pytest.mark.parametrize("pose", [WALK, SIT], ids=["walk", "sit"])
@pytest.mark.parametrize("deg_per_frame", [6, 20, 30])
def test_a_full_turn_is_never_swapped(pose: npt.NDArray[np.float64],
                                      deg_per_frame: int) -> None:
    """Two full turns on the spot (30 deg/frame: a pirouette of 900 deg/s at 30 fps)."""
    guard = LeftRight()
    out = []
    for k in range(720 // deg_per_frame):
        a = np.radians(k * deg_per_frame)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        out.append(guard(project(pose @ rot.T)[None], np.ones((1, N_JOINTS)), [1])[0])
    assert not any(out)


def test_flicker_and_a_lasting_flip_are_undone() -> None:
    kp = project(WALK)[None]
    conf = np.ones((1, N_JOINTS))
    flipped = kp[:, list(COCO17_FLIP)]
    rng = np.random.default_rng(0)

    def run(guard: LeftRight, seq: list[npt.NDArray[np.float64]]) -> list[bool]:
        # 1 px of detection noise per joint and frame
        return [bool(guard(k + rng.normal(0, 1, k.shape), conf, [4])[0]) for k in seq]

    pattern = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    out = run(LeftRight(), [kp] * 20 + [flipped if p else kp for p in pattern])
    assert out == [False] * 20 + [bool(p) for p in pattern]
    out = run(LeftRight(), [kp] * 20 + [flipped] * 30 + [kp] * 5)
    assert out == [False] * 20 + [True] * 30 + [False] * 5
    # the model is trusted in the end: a flip lasting seconds becomes the labelling
    out = run(LeftRight(), [kp] * 20 + [flipped] * 300)
    assert out[20] and not any(out[-100:])
    # tracks are independent; a new track starts as labelled
    guard = LeftRight()
    run(guard, [kp] * 5)
    assert not guard(flipped, conf, [5])[0]
    with pytest.raises(ValueError, match="track ids"):
        guard(kp, conf, [1, 2])
    with pytest.raises(ValueError, match="rate_start"):
        LeftRight(rate_start=-1.0)


def test_stage_lifts_the_fixed_labels_and_swaps_the_2d(manifest: Manifest,
                                                       demo: dict[str, Any]) -> None:
    sel = np.flatnonzero((demo["track"] == 0) & (demo["frame"] >= 60) & (demo["frame"] <= 75))
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    stage = LifterStage(lifter, sides=LeftRight())
    plain = LifterStage(lifter)
    world_stage = WorldLandmarksStage(LeftRight())
    for i in sel:
        kp33 = np.zeros((1, 33, 2), np.float32)
        vis33 = np.zeros((1, 33), np.float32)
        kp33[0, COCO17_FROM_BLAZEPOSE] = demo["kp"][i]
        vis33[0, COCO17_FROM_BLAZEPOSE] = demo["conf"][i]
        world = np.zeros((1, 33, 3), np.float32)
        world[0, :, 0] = np.arange(33)
        reg = np.array([[600, 400, 300, 300, 0]], np.float32)
        poses = Poses2D(kp33, np.zeros((1, 33), np.float32), vis33, np.ones(1, np.float32),
                        world, reg, reg.copy())
        ids = np.array([7], np.int64)
        j3 = stage(poses, ids).joints[0]
        raw = plain(poses, ids).joints[0]
        flipped = int(demo["frame"][i]) in FLIPPED
        assert bool(stage.swapped[0]) == flipped
        # the 3D of the fixed labels: the left shoulder stays on the image right
        assert j3[5, 0] > j3[6, 0]
        assert (raw[5, 0] > raw[6, 0]) != flipped
        w3 = world_stage(poses, ids).joints[0]
        assert world_stage.swapped.tolist() == stage.swapped.tolist()
        order = BLAZEPOSE_FLIP if flipped else np.arange(33)
        np.testing.assert_allclose(w3[:, 0] + 0.5 * (order[23] + order[24]), order)
        out = swap_sides(poses, stage.swapped)
        if flipped:
            np.testing.assert_array_equal(out.keypoints[0], kp33[0, BLAZEPOSE_FLIP])
            np.testing.assert_array_equal(out.world[0, :, 0], BLAZEPOSE_FLIP)
        else:
            assert out is poses
    with pytest.raises(ValueError, match="swap"):
        swap_sides(poses, np.zeros(2, bool))


def test_short_track_limbs_are_steady_with_the_prior(manifest: Manifest,
                                                     demo: dict[str, Any]) -> None:
    """Track 14 (29 frames): limb CV <= 5 % with the prior, far above without it."""
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    sel = demo["track"] == 14
    assert sel.sum() < 40
    lifted = lifter.lift(demo["kp"][sel], demo["conf"][sel])
    cv = {}
    for prior in (0, LIMB_PRIOR_FRAMES):
        limbs = LimbLengths(90, prior)
        out = np.concatenate([limbs(lifted.joints[i:i + 1], [14], lifted.valid[i:i + 1])
                              for i in range(int(sel.sum()))])
        cv[prior] = limb_cv(out, np.full(len(out), 14))[14]
    assert cv[LIMB_PRIOR_FRAMES] <= 5.0, cv
    assert cv[0] > 2 * cv[LIMB_PRIOR_FRAMES], cv
    # bone directions (so joint angles) are untouched by the prior
    limbs = LimbLengths(90, LIMB_PRIOR_FRAMES)
    out = limbs(lifted.joints[:1], [1], lifted.valid[:1])[0]
    u, v = out[9] - out[7], lifted.joints[0, 9] - lifted.joints[0, 7]
    np.testing.assert_allclose(u / np.linalg.norm(u), v / np.linalg.norm(v), atol=1e-5)
    with pytest.raises(ValueError, match="prior_frames"):
        LimbLengths(30, -1)


def test_the_chain_runs_in_seconds_not_frames() -> None:
    """The same flips, seen at 30 and at 60 fps, are undone alike, and a lasting one is
    trusted after the same time (the chain's rates are per second of capture time)."""
    kp = project(WALK)[None]
    conf = np.ones((1, N_JOINTS))
    flipped = kp[:, list(COCO17_FLIP)]
    rng = np.random.default_rng(1)

    def run(fps: float, flips: list[tuple[float, float]], seconds: float) -> list[bool]:
        guard, out = LeftRight(), []
        for k in range(round(seconds * fps)):
            t = k / fps
            on = any(a <= t < b for a, b in flips)
            noisy = (flipped if on else kp) + rng.normal(0, 1, kp.shape)
            out.append(bool(guard(noisy, conf, [3], t_s=1000.0 + t)[0]))
        return out

    # flicker: flips of 1/30 s to 0.2 s, 1/15 s to 0.5 s apart, after 1 s of the truth
    flips = [(1.0, 1.0 + 1 / 30), (1.1, 1.3), (1.4, 1.5), (2.0, 2.2), (2.3, 2.4)]
    for fps in (30.0, 60.0):
        out = run(fps, flips, 3.0)
        truth = [any(a <= k / fps < b for a, b in flips) for k in range(len(out))]
        assert out == truth, fps
    # a flip lasting seconds: trusted after about the same time at both rates (measured 3.07 s
    # at 30 fps, 2.80 s at 60; a chain in probabilities per frame would take half at 60 fps)
    trusted = {}
    for fps in (30.0, 60.0):
        out = run(fps, [(1.0, 20.0)], 8.0)
        assert out[int(1.0 * fps)]
        trusted[fps] = next(k for k in range(int(fps), len(out)) if not out[k]) / fps
    assert 1.5 < trusted[30.0] < 6.0, trusted
    assert abs(trusted[30.0] - trusted[60.0]) <= 0.15 * trusted[30.0], trusted
    # without times, frames are 1 / fps apart: the same as giving the times
    a, c = LeftRight(fps=60.0), LeftRight()
    for k, x in enumerate([kp] * 10 + [flipped] * 3 + [kp] * 3):
        got = (a(x, conf, [1])[0], c(x, conf, [1], t_s=k / 60)[0])
        assert got[0] == got[1] == (10 <= k < 13), (k, got)


def test_a_long_gap_forgets_towards_the_prior_instead_of_flipping() -> None:
    """A track seen again after seconds (frames dropped, or found again under its ID) in a
    side-on pose, where both labellings look alike, keeps the model's labelling: over a long
    gap the chain tends to its stationary share of swapped frames (1/6), never to a swap."""
    kp = project(WALK)[None].copy()
    kp[:, list(COCO17_FLIP)] = kp  # exactly side-on: every left joint on its right partner
    conf = np.ones((1, N_JOINTS))
    for gap in (0.5, 5.0, 600.0):
        guard = LeftRight()
        with np.errstate(all="raise"):  # no log(0) for any gap
            first = guard(kp, conf, [7], t_s=10.0)[0]
            again = guard(kp, conf, [7], t_s=10.0 + gap)[0]
        assert not first and not again, gap


def test_development_set_flips_are_undone_at_30_and_60_fps(manifest: Manifest) -> None:
    """Demo_MultiPerson (the development set, 60 fps): tracked, its 2D model flips left and
    right in a few dozen person-frames; the guard undoes most of them with the same parameters
    on the 60 fps tracks and on their 30 fps halves (every other frame)."""
    dev = multi_tracks()
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    flip = list(COCO17_FLIP)
    t60 = dev["frame"] / 60.0
    half = dev["track"] * 2 + dev["frame"] % 2
    counts = {}
    for name, order, track in (("none", np.arange(len(t60)), dev["track"]),
                               ("60", np.arange(len(t60)), dev["track"]),
                               ("30", np.lexsort((dev["frame"], half)), half)):
        kp, conf, tr = dev["kp"][order], dev["conf"][order], track[order]
        sw = np.zeros(len(kp), bool)
        if name != "none":
            guard = LeftRight()
            sw = np.concatenate([guard(kp[i:i + 1], conf[i:i + 1], [int(tr[i])],
                                       t_s=float(t60[order][i])) for i in range(len(kp))])
        kp = np.where(sw[:, None, None], kp[:, flip], kp)
        conf = np.where(sw[:, None], conf[:, flip], conf)
        joints = lifter.lift(kp, conf).joints
        counts[name] = accuracy(joints, _DevViews(dev["view"][order]),
                                dev["gt"][order])["swapped_frames"]
    # measured: 27 swapped frames without the guard, 10 with it at 60 fps and at 30 fps: the
    # fused truth itself trades sides in frames 52, 56 and 79-83, in two views
    assert counts["none"] >= 20, counts
    assert counts["60"] <= 10 and counts["30"] <= 12, counts


def _walking(fps: float, seconds: float, seed: int) -> npt.NDArray[np.float64]:
    """(frames, 17, 2) px: WALK turning slowly (20 deg/s) with 1 px of noise per joint."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(round(seconds * fps)):
        a = np.radians(20.0 * k / fps)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        out.append(project(WALK @ rot.T) + rng.normal(0, 1, (N_JOINTS, 2)))
    return np.stack(out)


@pytest.mark.parametrize("fps", [30.0, 60.0])
def test_flicker_with_half_turned_frames_is_undone(fps: float) -> None:
    """The 2D model's flicker: flips of a frame or two, the frames next to them half-turned
    (every joint midway between its two labellings). Such a frame fits neither labelling of
    its neighbours; without the bridge over it, the flip after it is taken as labelled."""
    kp = _walking(fps, 3.0, 2)
    conf = np.ones((1, N_JOINTS))
    step = round(fps / 30)  # frames per 1/30 s
    n = len(kp)
    lam = np.zeros(n)
    for start in (30, 45, 60, 75):  # in 1/30 s: four flips of 1/30 s, half-turned before
        k = start * step
        lam[k - step:k] = 0.5
        lam[k:k + step] = 1.0
    seq = (1 - lam[:, None, None]) * kp + lam[:, None, None] * kp[:, list(COCO17_FLIP)]
    out = {}
    for name, guard in (("bridge", LeftRight()), ("none", LeftRight(bridge_s=0.0))):
        out[name] = np.array([guard(seq[k][None], conf, [2], t_s=k / fps)[0]
                              for k in range(n)])
    flipped = lam == 1.0
    assert (out["bridge"] == flipped).all(), np.flatnonzero(out["bridge"] != flipped)
    assert (out["none"] != flipped).sum() >= 2 * step  # the chain lost: flips taken as labelled



@pytest.mark.parametrize("fps", [30.0, 60.0])
def test_runs_of_half_turned_frames_are_bridged(fps: float) -> None:
    """Half-turned frames in runs of up to 0.1 s before, after or around a flip of 1/30 s (a
    half-turned frame fits the one before it, so the last frame that fitted may itself be
    half-turned): the new frame is compared with every frame that fitted within ``bridge_s``
    and the flips are undone; without the bridge, or with runs longer than it, they are not."""
    kp = _walking(fps, 3.0, 2)
    conf = np.ones((1, N_JOINTS))
    step = round(fps / 30)  # frames per 1/30 s
    for pre, post, bridged in ((3, 0, True), (2, 2, True), (0, 3, True), (5, 0, False)):
        lam = np.zeros(len(kp))
        for start in (30, 45, 60, 75):  # in 1/30 s
            k = start * step
            lam[k - pre * step:k] = 0.5
            lam[k:k + step] = 1.0
            lam[k + step:k + (1 + post) * step] = 0.5
        seq = (1 - lam[:, None, None]) * kp + lam[:, None, None] * kp[:, list(COCO17_FLIP)]
        whole = (lam == 0) | (lam == 1)  # a half-turned frame has no right labelling
        for guard, want in ((LeftRight(), bridged), (LeftRight(bridge_s=0.0), False)):
            out = np.array([guard(seq[k][None], conf, [2], t_s=k / fps)[0]
                            for k in range(len(kp))])
            wrong = np.flatnonzero((out != (lam == 1)) & whole)
            assert (len(wrong) == 0) == want, (pre, post, guard.bridge_s, wrong)

def test_a_short_absence_keeps_the_state() -> None:
    """A track missing from a few frames (another person in the frame) comes back still
    flipped: the guard keeps its state over the gap, the chain run over it; after an absence
    longer than ``max_gap_s`` the track starts afresh as labelled."""
    kp = _walking(30.0, 2.0, 3)
    conf = np.ones((1, N_JOINTS))
    other = project(SIT)[None]
    flipped = kp[:, list(COCO17_FLIP)]
    for absent, want in ((3, True), (10, True), (40, False)):  # frames at 30 fps
        guard = LeftRight()
        got = []
        for k in range(30):  # 20 frames as labelled, then flipped
            seq = flipped if k >= 20 else kp
            got.append(guard(seq[k][None], conf, [1], t_s=k / 30)[0])
        assert not any(got[:20]) and all(got[20:]), got
        for k in range(30, 30 + absent):  # the track is away, another one is seen
            assert not guard(other, conf, [9], t_s=k / 30)[0]
        k = 30 + absent
        both = guard(np.concatenate([other, flipped[k % len(kp)][None]]),
                     np.ones((2, N_JOINTS)), [9, 1], t_s=k / 30)
        assert not both[0] and both[1] == want, (absent, both)
        # a clock that goes back (a restarted source) is one nominal frame: the state is kept
        k += 1
        assert guard(flipped[k % len(kp)][None], conf, [1], t_s=0.0)[0] == want
        guard.reset()
        assert not guard(flipped[k % len(kp)][None], conf, [1], t_s=1.0)[0]
    with pytest.raises(ValueError, match="misfit"):
        LeftRight(misfit=0.0)


def _sides_3d(lifter: Lifter, kp: npt.NDArray[Any], conf: npt.NDArray[Any]
              ) -> npt.NDArray[np.float32]:
    """(n, 2, 17, 3): the lifter's 3D of both labellings of every row."""
    return paired_sides(lift_both_sides(lifter, kp, conf))


def test_a_flip_after_half_turned_frames_is_undone_with_the_3d(manifest: Manifest) -> None:
    """A three-quarter view (the development set's view 3 track, 60 fps): 0.2 s of half-turned
    frames (every joint midway, longer than the bridge) and then a flip of 4 frames. The
    half-turned frames are symmetric, so the 2D cannot compare the flip with them and the
    frames before are out of the bridge's reach: the 2D guard takes the flip as labelled. The
    lifter turns the flipped labelling round (facing about 150 deg apart), so with the 3D of
    both labellings the guard undoes it."""
    dev = multi_tracks()
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    sel = dev["track"] == 3001
    kp, conf, t = dev["kp"][sel], dev["conf"][sel], dev["frame"][sel] / 60.0
    assert np.all(np.diff(dev["frame"][sel][:80]) == 1)  # contiguous at 60 fps
    wrong: dict[str, int] = {"2d": 0, "3d": 0}
    for start in (16, 40, 58, 70):  # frames 17, 41, 59, 71
        lam = np.zeros(len(kp))
        lam[start - 12:start] = 0.5
        lam[start:start + 4] = 1.0
        seq = ((1 - lam[:, None, None]) * kp + lam[:, None, None] * kp[:, COCO17_FLIP]
               ).astype(np.float32)
        cf = np.where(lam[:, None] == 1.0, conf[:, COCO17_FLIP], conf)
        y = _sides_3d(lifter, seq, cf)
        whole = (lam == 0) | (lam == 1)  # a half-turned frame has no right labelling
        for name, guard in (("2d", LeftRight()), ("3d", LeftRight())):
            out = np.array([guard(seq[i:i + 1], cf[i:i + 1], [3], t_s=float(t[i]),
                                  sides_3d=y[i:i + 1] if name == "3d" else None)[0]
                            for i in range(len(kp))])
            wrong[name] += int(((out != (lam == 1.0)) & whole).sum())
    # measured: 2D 74 frames wrong over the 4 flips (each flip and frames after it), 3D none
    assert wrong["2d"] >= 4 * 4 and wrong["3d"] == 0, wrong


def test_a_half_turned_frame_that_fits_neither_labelling_is_settled_by_the_3d(
        manifest: Manifest) -> None:
    """The 2D model's flicker often starts with a half-turned frame leaning to the other
    labelling (here 0.7 of the way), then flips. Against the frame before, that frame's
    better labelling is the exchanged one, but it misfits (over ``misfit``) and by a margin
    the 2D evidence alone does not carry against the prior, while its two costs are too far
    apart for ``facing_gate``: the 3D's facing must decide it too. The development set's
    three-quarter view (view 3's track, 60 fps), seven such episodes."""
    dev = multi_tracks()
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    sel = dev["track"] == 3001
    kp, conf, t = dev["kp"][sel], dev["conf"][sel], dev["frame"][sel] / 60.0
    wrong: dict[str, int] = {"2d": 0, "3d": 0}
    for start in range(10, len(kp) - 10, 12):
        lam = np.zeros(len(kp))
        lam[start] = 0.7
        lam[start + 1:start + 3] = 1.0
        seq = ((1 - lam[:, None, None]) * kp + lam[:, None, None] * kp[:, COCO17_FLIP]
               ).astype(np.float32)
        cf = np.where(lam[:, None] > 0.5, conf[:, COCO17_FLIP], conf)
        y = _sides_3d(lifter, seq, cf)
        for name, guard in (("2d", LeftRight()), ("3d", LeftRight())):
            out = np.array([guard(seq[i:i + 1], cf[i:i + 1], [3], t_s=float(t[i]),
                                  sides_3d=y[i:i + 1] if name == "3d" else None)[0]
                            for i in range(len(kp))])
            wrong[name] += int((out != (lam > 0.5))[lam > 0].sum())
    # measured: the 2D alone 3 frames wrong, the 3D where the 2D costs are close (the rule
    # before session 14) 2, the 3D also where the better labelling misfits 0
    assert wrong["2d"] >= 2 and wrong["3d"] == 0, wrong


def test_the_stage_publishes_the_3d_the_guard_saw(manifest: Manifest,
                                                  demo: dict[str, Any]) -> None:
    """The 3D stage lifts both labellings in one batch for its guard and publishes the rows of
    the labelling kept: exactly the lifter's 3D of the relabelled 2D."""
    lifter = Lifter.load("lifter_single_int8", 1, manifest)
    stage = LifterStage(lifter, sides=LeftRight())
    sel = np.flatnonzero(demo["track"] == 0)[55:80]  # frames 62-86: the clip's flip inside
    swapped = []
    for i in sel:
        kp33 = np.zeros((2, 33, 2), np.float32)
        vis33 = np.zeros((2, 33), np.float32)
        kp33[:, COCO17_FROM_BLAZEPOSE] = demo["kp"][i]
        vis33[:, COCO17_FROM_BLAZEPOSE] = demo["conf"][i]
        kp33[1] += 500.0  # a second person, as labelled
        reg = np.array([[600, 400, 300, 300, 0]] * 2, np.float32)
        poses = Poses2D(kp33, np.zeros((2, 33), np.float32), vis33, np.ones(2, np.float32),
                        np.zeros((2, 33, 3), np.float32), reg, reg.copy())
        j3 = stage(poses, np.array([7, 8], np.int64)).joints
        fixed = swap_sides(poses, stage.swapped)
        np.testing.assert_array_equal(j3, lifter.lift(fixed.keypoints, fixed.visibility).joints)
        swapped.append(stage.swapped.tolist())
    assert [s[0] for s in swapped] == [int(demo["frame"][i]) in FLIPPED for i in sel]
    with pytest.raises(ValueError, match="sides_3d"):
        LeftRight()(demo["kp"][:1], demo["conf"][:1], [1], sides_3d=np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match="facing_scale"):
        LeftRight(facing_scale=0.0)
