"""Development figures of the left/right guard (:class:`edge.lift3d.LeftRight`), never the test set.

* ``dev``: Pose2Sim ``Demo_MultiPerson`` (:func:`edge.bench.lift.multi_tracks`), its tracks at
  60 fps and as 30 fps halves (every other frame), frame times from the frame indices: frames
  whose lifted left and right limbs are swapped against the fused 3D
  (:func:`edge.bench.lift.swapped`).
* ``inj``: the same tracks with label flips injected on a timeline in seconds (episodes of
  1/60 s to 0.25 s, flicker of one or two frames among them), the same count.
* ``beyond``: the ``dev`` and ``inj`` figures (totals over the views) without the frames where
  the fused truth trades sides itself (:data:`TRUTH_TRADES`), which no guard can get right.
* ``demo``: the demo clip (30 fps): frames swapped other than track 0's known flip (68-72),
  and those of the flip missed.
* ``turn``: flips of 1, 2 and 3 frames injected at every frame of the demo clip's gradual turn
  to side-on (track 0, frames 80-165, one flip per run): frames the guard labels wrongly,
  summed (side-on, neither labelling looks wrong: most such flips stay whatever the guard).
* cost: microseconds per person per frame (one person per call, the demo clip's poses); with
  3D evidence, the lift of both labellings (:func:`edge.lift3d.lift_both_sides`) included.

Each guard runs with the 2D alone or with the 3D of both labellings (``sides_3d``, the shipped
single-frame lifter's, as :class:`edge.lift3d.LifterStage` gives it).

The development set's fused truth is itself edge-pose's output: it trades its people's sides in
a few frames (Demo_MultiPerson frames 52, 56 and 79-83), which count as swapped in every view
whatever the guard does.

Usage::

    .venv/bin/python -m lifter.sides_dev
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bench.lift import _DevViews, accuracy, demo_tracks, multi_tracks, swapped
from edge.lift3d import COCO17_FLIP, LeftRight, Lifter, lift_both_sides, paired_sides

Guard = Callable[[], LeftRight]  # a guard factory
FLIP = list(COCO17_FLIP)
#: Demo clip frames of track 0 the 2D model labels the other way round.
DEMO_FLIPPED = (68, 69, 70, 71, 72)
#: Demo clip frames of track 0 turning gradually to side-on (the ``turn`` figure).
DEMO_TURN = (80, 166)
#: Demo_MultiPerson frames where the fused truth itself trades its people's left and right:
#: swapped in every view whatever a guard does (left out of the ``beyond`` figures).
TRUTH_TRADES = (52, 56, 79, 80, 81, 82, 83)


def sides_3d(lifter: Lifter | None, kp: npt.NDArray[Any], conf: npt.NDArray[Any]
             ) -> npt.NDArray[np.float32] | None:
    """(n, 2, 17, 3) the 3D of both labellings of every row (None without a lifter)."""
    if lifter is None:
        return None
    return paired_sides(lift_both_sides(lifter, kp, conf))


def run_guard(make: Guard, kp: npt.NDArray[Any], conf: npt.NDArray[Any],
              track: npt.NDArray[Any], t_s: npt.NDArray[Any],
              lifter: Lifter | None = None) -> npt.NDArray[np.bool_]:
    """(n,) the guard's swaps, rows in time order within each track.

    With ``lifter``, the guard gets the 3D of both labellings (the lifter's results do not
    depend on the batch, so lifting all rows at once is the same as lifting each frame).
    """
    guard = make()
    y = sides_3d(lifter, kp, conf)
    return np.concatenate([guard(kp[i:i + 1], conf[i:i + 1], [int(track[i])],
                                 t_s=float(t_s[i]),
                                 sides_3d=None if y is None else y[i:i + 1])
                           for i in range(len(kp))])


def flicker(rng: np.random.Generator, t: npt.NDArray[Any], rate: float = 1.0,
            half: float = 0.0) -> npt.NDArray[np.float64]:
    """(n,) injected flips at times ``t`` (s): episodes starting ``rate`` per second.

    1 where flipped, 0 where not; with probability ``half`` a frame next to an episode's start
    or end is half-turned instead (the 2D model's transitional frames: the joints a share
    0.3-0.7 of the way to their flipped places).
    """
    out = np.zeros(len(t), bool)
    t0, t1 = float(t.min()), float(t.max())
    s = t0 + rng.exponential(1 / rate)
    while s < t1:
        kind = rng.integers(3)
        if kind == 0:  # flicker: 1-2 frames on, 1-2 off, a few times
            for _ in range(int(rng.integers(2, 5))):
                d = float(rng.integers(1, 3)) / 60
                out |= (t >= s) & (t < s + d - 1e-6)
                s += d + float(rng.integers(1, 3)) / 60
        else:  # one episode of 1/60 to 0.25 s
            d = float(rng.uniform(1 / 60, 0.25))
            out |= (t >= s) & (t < s + d)
            s += d
        s += rng.exponential(1 / rate)
    lam = out.astype(np.float64)
    edges = np.flatnonzero(np.diff(out.astype(int)) != 0)
    for e in edges:
        if rng.random() < half:
            k = e if not out[e] else e + 1  # the unflipped frame next to the edge
            lam[k] = rng.uniform(0.3, 0.7)
    return lam


def relabel(kp: npt.NDArray[Any], conf: npt.NDArray[Any], sw: npt.NDArray[Any]
         ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(n, 17, 2) keypoints and (n, 17) confidences with the rows of ``sw`` (n,) relabelled."""
    return (np.where(sw[:, None, None], kp[:, FLIP], kp),
            np.where(sw[:, None], conf[:, FLIP], conf))


def count(lifter: Lifter, kp: npt.NDArray[Any], conf: npt.NDArray[Any], sw: npt.NDArray[Any],
          view: npt.NDArray[Any], gt: npt.NDArray[Any], frame: npt.NDArray[Any]
          ) -> tuple[list[int], int]:
    """Swapped frames after undoing ``sw``: per view, and in all, :data:`TRUTH_TRADES` left out."""
    kp, conf = relabel(kp, conf, sw)
    joints = lifter.lift(kp, conf).joints
    acc = accuracy(joints, _DevViews(view), gt)
    ok = np.isfinite(gt).all(axis=(1, 2)) & ~np.isin(frame, TRUTH_TRADES)
    return ([v["swapped_frames"] for v in acc["views"]],
            int(swapped(joints[ok], gt[ok]).sum()))


def inject(kp: npt.NDArray[Any], conf: npt.NDArray[Any], lam: npt.NDArray[Any]
           ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The 2D with flips (``lam`` 1) and half-turned frames (0 < ``lam`` < 1) injected."""
    kpi = (1 - lam[:, None, None]) * kp + lam[:, None, None] * kp[:, FLIP]
    cfi = np.where(lam[:, None] > 0.5, conf[:, FLIP], conf)
    return kpi.astype(np.float32), cfi


def evaluate(make: Guard | None, lifter: Lifter, seeds: int = 6, use_3d: bool = False,
             dev: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every development figure of one guard (None: no guard).

    ``use_3d``: the guard gets ``lifter``'s 3D of both labellings. ``dev``: the tracks of the
    ``dev`` and ``inj`` figures, as :func:`edge.bench.lift.multi_tracks` gives them (default:
    those; :mod:`lifter.sides_variants` passes its mirrored and halved views).
    """
    guide = lifter if use_3d else None
    dev = multi_tracks() if dev is None else dev
    out: dict[str, Any] = {}
    beyond: dict[str, int] = {}
    t60 = dev["frame"] / 60.0
    half = dev["track"] * 2 + dev["frame"] % 2
    o30 = np.lexsort((dev["frame"], half))
    for name, order, track in (("60", np.arange(len(t60)), dev["track"]), ("30", o30, half)):
        kp, conf, tr, t = dev["kp"][order], dev["conf"][order], track[order], t60[order]
        view, gt, frame = dev["view"][order], dev["gt"][order], dev["frame"][order]
        sw = (np.zeros(len(kp), bool) if make is None
              else run_guard(make, kp, conf, tr, t, guide))
        out[f"dev{name}"], beyond[f"dev{name}"] = count(lifter, kp, conf, sw, view, gt, frame)
        for share in (0.0, 0.5):
            tot = own = 0
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                lam = np.zeros(len(kp))
                for tid in np.unique(tr):
                    s = tr == tid
                    lam[s] = flicker(rng, t[s], half=share)
                kpi, cfi = inject(kp, conf, lam)
                sw = (np.zeros(len(kp), bool) if make is None
                      else run_guard(make, kpi, cfi, tr, t, guide))
                per_view, beyond_all = count(lifter, kpi, cfi, sw, view, gt, frame)
                tot, own = tot + sum(per_view), own + beyond_all
            out[f"inj{name}" + ("half" if share else "")] = tot
            beyond[f"inj{name}" + ("half" if share else "")] = own
    out["beyond"] = beyond
    demo = demo_tracks()
    sw = (np.zeros(len(demo["kp"]), bool) if make is None else
          run_guard(make, demo["kp"], demo["conf"], demo["track"], demo["frame"] / 30.0,
                    guide))
    want = (demo["track"] == 0) & np.isin(demo["frame"], DEMO_FLIPPED)
    out["demo_wrong"] = int((sw & ~want).sum())
    out["demo_missed"] = int((want & ~sw).sum())
    out["turn"] = turn_wrong(make, guide)
    return out


def turn_wrong(make: Guard | None, lifter: Lifter | None) -> int:
    """The ``turn`` figure: frames labelled wrongly with flips injected in the demo turn."""
    demo = demo_tracks()
    s = demo["track"] == 0
    kp, conf, frame = demo["kp"][s], demo["conf"][s], demo["frame"][s]
    own = np.isin(frame, DEMO_FLIPPED)
    tr = np.zeros(len(kp), np.int64)
    wrong = 0
    for length in (1, 2, 3):
        for start in range(*DEMO_TURN):
            lam = (frame >= start) & (frame < start + length)
            kpi, cfi = relabel(kp, conf, lam)
            sw = (np.zeros(len(kp), bool) if make is None
                  else run_guard(make, kpi, cfi, tr, frame / 30.0, lifter))
            wrong += int((sw != (lam ^ own)).sum())
    return wrong


def cost_us(make: Guard, lifter: Lifter | None = None, n: int = 2000) -> float:
    """Microseconds per person per frame (one person per call).

    With ``lifter``, its lift of both labellings is included.
    """
    demo = demo_tracks()
    kp, conf, tr = demo["kp"], demo["conf"], demo["track"]
    guard = make()
    t0 = time.perf_counter()
    for k in range(n):
        i = k % len(kp)
        guard(kp[i:i + 1], conf[i:i + 1], [int(tr[i])], t_s=k / 30.0,
              sides_3d=sides_3d(lifter, kp[i:i + 1], conf[i:i + 1]))
    return (time.perf_counter() - t0) / n * 1e6


def lift_us(lifter: Lifter, rows: int, n: int = 2000) -> float:
    """Microseconds per call of ``lifter.lift`` on ``rows`` poses (the demo clip's)."""
    demo = demo_tracks()
    kp, conf = demo["kp"], demo["conf"]
    lifter.lift(kp[:rows], conf[:rows])
    t0 = time.perf_counter()
    for k in range(n):
        i = k % (len(kp) - rows)
        lifter.lift(kp[i:i + rows], conf[i:i + rows])
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    """Prints the development figures and cost of each guard, then the lifter's cost.

    The guards: none, without its bridge, on the 2D alone, the default (2D and, where it is
    weak, the 3D facing) and the 3D facing everywhere. A 3D stage whose guard has the 3D
    lifts 2 poses per person instead of 1.
    """
    lifter = Lifter.load("lifter_single_int8", 1)
    for name, make, use_3d in (
            ("none", None, False),
            ("no bridge (2D)", partial(LeftRight, bridge_s=0.0), False),
            ("2D only", LeftRight, False),
            ("default (2D + 3D facing)", LeftRight, True),
            ("3D facing ungated", partial(LeftRight, facing_gate=1e9), True)):
        cost = "" if make is None else f"{cost_us(make, lifter if use_3d else None):.0f} us"
        print(name, evaluate(make, lifter, use_3d=use_3d), cost)
    print(f"lifter: 1 pose {lift_us(lifter, 1):.0f} us, 2 poses {lift_us(lifter, 2):.0f} us "
          "per call")


if __name__ == "__main__":
    main()
