"""Figures of the multi-view fusion (edge/fuse) on the two Pose2Sim scenes.

``python -m bench.fuse_bench`` prints:

* leave-one-view-out reprojection: each fused person is triangulated again without one of its
  views and projected into it; the median px distance to that view's own 2D joints, per
  held-out view (the calibration's own floor is about 5-15 px); once for the triangulation
  alone (:func:`leave_one_out`) and once for the joints published (the scene fused without the
  view, smoothed and limb-steadied as published: :func:`leave_one_out_published`);
* bone-length steadiness: coefficient of variation of each limb's length over the clip, per
  fused person (goal <= 3 %);
* multi-person: frames where both people of Demo_MultiPerson are fused, identity switches;
* fusion time against views (2-8) and people (1-10), on synthetic scenes made by projecting
  the fused 3D people into virtual cameras on a ring;
* the latency fusion adds at 30 Hz with 4 views (real-time replay with arrival jitter).

The non-timing figures are asserted, with tolerances, by tests/test_fuse_offline.py.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from bench.fuse_data import Scene, scene
from edge.fuse.calib import Calibration, CameraModel, read_calibration
from edge.fuse.fuser import FLIP, FusedFrame, Fuser, FuseSettings
from edge.fuse.offline import OfflineReport, fuse_jsonl, read_view_frames
from edge.fuse.sync import FrameGroup, Synchroniser
from edge.fuse.views import ViewFrame, ViewPerson

F64 = npt.NDArray[np.float64]

#: Limbs whose length is rigid: (name, COCO-17 joint a, joint b).
LIMBS: tuple[tuple[str, int, int], ...] = (
    ("left_upper_arm", 5, 7), ("right_upper_arm", 6, 8),
    ("left_forearm", 7, 9), ("right_forearm", 8, 10),
    ("left_thigh", 11, 13), ("right_thigh", 12, 14),
    ("left_shin", 13, 15), ("right_shin", 14, 16),
    ("shoulders", 5, 6), ("hips", 11, 12))


@dataclass(frozen=True)
class SceneRun:
    """A scene fused offline, with what is needed to score it.

    Attributes:
        scene: The scene's files.
        calib: Its calibration.
        devices: Device -> camera.
        fused: The fused frames.
        views: ``(device, frame_id)`` -> the device's frame.
        report: The offline report.
        settings: The fusion settings used.
        offsets_s: The devices' capture-time offsets used, s.
    """

    scene: Scene
    calib: Calibration
    devices: dict[str, str]
    fused: list[FusedFrame]
    views: dict[tuple[str, int], ViewFrame]
    report: OfflineReport
    settings: FuseSettings
    offsets_s: dict[str, float] | None = None


def run_scene(name: str, settings: FuseSettings | None = None,
              offsets_s: dict[str, float] | None = None) -> SceneRun:
    """Fuses one scene (``single`` or ``multi``) with ``settings`` (default: the defaults)."""
    settings = settings if settings is not None else FuseSettings()
    sc = scene(name)
    calib = read_calibration(sc.calib)
    devices = {f"cam{i + 1:02d}": cam for i, cam in enumerate(calib.cameras)}
    report = OfflineReport()
    fused = list(fuse_jsonl(sc.jsonl, calib, devices, settings, report, offsets_s))
    views = {(f.device, f.frame_id): f for p in sc.jsonl for f in read_view_frames(p)}
    return SceneRun(sc, calib, devices, fused, views, report, settings, offsets_s)


def _held_out_error(proj: F64, vp: ViewPerson, min_conf: float) -> F64 | None:
    """Px distances of (17, 2) projected joints to a view's own 2D joints.

    Joints with confidence >= ``min_conf`` count, in the view's labelling or its mirror,
    whichever has the lower median; None when no joint counts.
    """
    seen = vp.conf >= min_conf
    e = np.linalg.norm(proj - vp.kp, axis=-1)[seen]
    ef = np.linalg.norm(proj[FLIP] - vp.kp, axis=-1)[seen]
    e, ef = e[np.isfinite(e)], ef[np.isfinite(ef)]
    if not e.size:
        return None
    return np.asarray(e if not ef.size or np.median(e) <= np.median(ef) else ef, np.float64)


def leave_one_out(run: SceneRun, settings: FuseSettings | None = None) -> dict[str, float]:
    """Median px error per held-out view, over the persons fused from >= 3 views.

    The person is triangulated from its other views as the fuser does (confidence-weighted
    DLT, left/right swaps undone) and projected, with distortion, into the held-out view; the
    error is the distance to that view's own 2D joints (confidence >= ``min_conf``), in the
    view's labelling or its mirror, whichever is closer (the fuser undoes swaps likewise).

    Returns:
        Device -> median over its held-out joints, px.
    """
    settings = settings if settings is not None else FuseSettings()
    fuser = Fuser(run.calib, run.devices, settings)
    cams = {d: run.calib.cameras[c] for d, c in run.devices.items()}
    errs: dict[str, list[F64]] = {d: [] for d in run.devices}
    for fr in run.fused:
        for p in fr.persons:
            if len(p.sources) < 3:
                continue
            people = {dev: next(q for q in run.views[(dev, fid)].persons if q.id == pid)
                      for dev, fid, pid in p.sources}
            for held, vp in people.items():
                xw, _ = fuser.triangulate_person({d: q for d, q in people.items() if d != held})
                e = _held_out_error(cams[held].project(xw), vp, settings.min_conf)
                if e is not None:
                    errs[held].append(e)
    return {d: float(np.median(np.concatenate(e))) for d, e in errs.items() if e}


def leave_one_out_published(run: SceneRun) -> dict[str, float]:
    """Median px error per held-out view of the joints the fuser publishes without that view.

    For each view, the scene is fused again from the other views with the run's settings
    (smoothing and limb steadying included, as published); each person the full run fused
    from >= 3 views, held-out view included, is found in that fusion (by a shared 2D source)
    and its published joints are projected, with distortion, into the held-out view and
    compared with its own 2D joints as in :func:`leave_one_out`.

    Returns:
        Device -> median over its held-out joints, px.
    """
    cams = {d: run.calib.cameras[c] for d, c in run.devices.items()}
    errs: dict[str, list[F64]] = {d: [] for d in run.devices}
    for i, held in enumerate(run.devices):
        rest = {d: c for d, c in run.devices.items() if d != held}
        paths = [p for k, p in enumerate(run.scene.jsonl) if k != i]
        by_source = {s: p for fr in fuse_jsonl(paths, run.calib, rest, run.settings,
                                               offsets_s=run.offsets_s)
                     for p in fr.persons for s in p.sources}
        for fr in run.fused:
            for p in fr.persons:
                mine = [s for s in p.sources if s[0] == held]
                if len(p.sources) < 3 or not mine:
                    continue
                q = next((by_source[s] for s in p.sources if s in by_source), None)
                if q is None:
                    continue
                _, fid, pid = mine[0]
                vp = next(v for v in run.views[(held, fid)].persons if v.id == pid)
                e = _held_out_error(cams[held].project(q.joints), vp, run.settings.min_conf)
                if e is not None:
                    errs[held].append(e)
    return {d: float(np.median(np.concatenate(e))) for d, e in errs.items() if e}


def estimate_offsets(run: SceneRun, max_shift: int = 8, sweeps: int = 2) -> dict[str, int]:
    """Frame offsets between a one-person scene's views that best explain its geometry.

    Coordinate descent: each view in turn (the first is the reference) is shifted by -max_shift
    .. +max_shift frames against the others, keeping the shift with the lowest median
    reprojection error of the person triangulated from all views (as Pose2Sim's
    synchronisation step does with keypoint speeds).

    Returns:
        Device -> k: its frame f + k shows the moment the reference shows at f (its
        capture times are k frames ahead; 0 for the reference).
    """
    fuser = Fuser(run.calib, run.devices, FuseSettings(smoothing=False))
    devices = list(run.devices)
    frames = sorted({f for (_, f) in run.views})
    shift = dict.fromkeys(devices, 0)

    def person(dev: str, f: int) -> ViewPerson | None:
        v = run.views.get((dev, f))
        return v.persons[0] if v is not None and len(v.persons) == 1 else None

    def cost(sh: dict[str, int]) -> float:
        meds = []
        for f in frames[max_shift:-max_shift:2]:
            ppl = {d: person(d, f + sh[d]) for d in devices}
            if any(p is None for p in ppl.values()):
                continue
            _, err = fuser.triangulate_person({d: p for d, p in ppl.items() if p is not None})
            meds.append(float(np.nanmedian(err)))
        return float(np.median(meds)) if meds else np.inf

    for _ in range(sweeps):
        for d in devices[1:]:
            scored = [(cost({**shift, d: k}), abs(k), k)
                      for k in range(-max_shift, max_shift + 1)]
            shift[d] = min(scored)[2]
    return shift


def bone_cv(run: SceneRun, min_frames: int = 20) -> dict[int, dict[str, float]]:
    """Coefficient of variation (std / mean) of each limb's length, per fused ID.

    Returns:
        Fused ID (seen in >= ``min_frames`` frames) -> limb -> CV (a fraction).
    """
    lengths: dict[int, dict[str, list[float]]] = {}
    for fr in run.fused:
        for p in fr.persons:
            per = lengths.setdefault(p.id, {n: [] for n, _, _ in LIMBS})
            for n, a, b in LIMBS:
                d = float(np.linalg.norm(p.joints[a] - p.joints[b]))
                if math.isfinite(d):
                    per[n].append(d)
    out: dict[int, dict[str, float]] = {}
    for pid, per in lengths.items():
        if max(len(v) for v in per.values()) < min_frames:
            continue
        out[pid] = {n: float(np.std(v) / np.mean(v)) for n, v in per.items()
                    if len(v) >= min_frames}
    return out


def people_figures(run: SceneRun, n_people: int = 2) -> dict[str, Any]:
    """How often ``n_people`` are fused, and identity switches between consecutive frames.

    A switch: two consecutive frames' people matched by mid-hip distance (an assignment)
    carry different IDs.
    """
    with_people = [fr for fr in run.fused
                   if any(run.views[(d, f)].persons for d, f in fr.frames.items()
                          if (d, f) in run.views)]
    full = sum(1 for fr in with_people if len(fr.persons) >= n_people)
    switches = 0
    prev: FusedFrame | None = None
    for fr in run.fused:
        if prev is not None and prev.persons and fr.persons:
            a = np.stack([0.5 * (p.joints[11] + p.joints[12]) for p in prev.persons])
            b = np.stack([0.5 * (p.joints[11] + p.joints[12]) for p in fr.persons])
            cost = np.nan_to_num(np.linalg.norm(a[:, None] - b[None], axis=-1), nan=1e6)
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                if cost[r, c] < 0.5 and prev.persons[r].id != fr.persons[c].id:
                    switches += 1
        prev = fr
    ids = sorted({p.id for fr in run.fused for p in fr.persons})
    return {"frames_with_people": len(with_people), "frames_all_fused": full,
            "fraction_all_fused": full / max(1, len(with_people)),
            "id_switches": switches, "ids": ids,
            "max_people": max((len(fr.persons) for fr in run.fused), default=0)}


# ----------------------------------------------------------------------------- timing


def ring_cameras(n: int, like: CameraModel, radius_m: float = 4.0,
                 center: F64 | None = None) -> list[CameraModel]:
    """``n`` virtual cameras on a ring around ``center``, 1.5 m up, looking at it."""
    c = np.zeros(3) if center is None else center
    out = []
    for i in range(n):
        a = 2 * math.pi * i / n
        pos = c + np.array([radius_m * math.cos(a), radius_m * math.sin(a), 1.5])
        z = c - pos
        z /= np.linalg.norm(z)
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        r = np.stack([x, y, z])
        out.append(CameraModel(f"v{i + 1:02d}", like.size, like.k, np.zeros(5), r, -r @ pos))
    return out


def synthetic_group(cams: Sequence[CameraModel], people: Sequence[F64], ts: float,
                    frame_id: int) -> FrameGroup:
    """A frame group of ``people`` (each (17, 3) m) seen by ``cams`` (confidence 0.9)."""
    frames = {}
    for cam in cams:
        persons = [ViewPerson(i + 1, cam.project(p), np.full(17, 0.9))
                   for i, p in enumerate(people)]
        frames[cam.name] = ViewFrame(cam.name, frame_id, ts, cam.size, persons)
    return FrameGroup(ts, frames)


def fusion_time(run: SceneRun, views: Sequence[int] = (2, 3, 4, 6, 8),
                people: Sequence[int] = (1, 2, 4, 6, 8, 10), frames: int = 30
                ) -> dict[str, dict[int, float]]:
    """Median fusion ms per group against views (2 people) and people (4 views)."""
    skel = [p.joints for fr in run.fused for p in fr.persons
            if np.all(np.isfinite(p.joints))][:frames]
    centre = np.mean([s.mean(0) for s in skel], axis=0)
    like = next(iter(run.calib))

    def crowd(base: F64, n: int) -> list[F64]:
        side = math.ceil(math.sqrt(n))
        return [base - base.mean(0) + centre + np.array([1.0 * (k % side), 1.0 * (k // side),
                                                         0.0])
                - np.array([0.5 * (side - 1), 0.5 * (side - 1), 0.0]) for k in range(n)]

    def measure(n_views: int, n_people: int) -> float:
        cams = ring_cameras(n_views, like, 5.0, centre)
        calib = Calibration({c.name: c for c in cams})
        fuser = Fuser(calib, {c.name: c.name for c in cams}, FuseSettings())
        ms = []
        for f, base in enumerate(skel):
            group = synthetic_group(cams, crowd(base, n_people), f / 30.0, f)
            t0 = time.perf_counter()
            fuser.fuse(group)
            ms.append(1000.0 * (time.perf_counter() - t0))
        return float(np.median(ms))

    return {"views_2_people": {v: measure(v, 2) for v in views},
            "people_4_views": {n: measure(4, n) for n in people}}


def latency(run: SceneRun, rate_hz: float = 30.0, seconds: float = 6.0, jitter_s: float = 0.01,
            seed: int = 0) -> dict[str, float]:
    """Latency fusion adds, replaying a scene's 4 views in real time with arrival jitter.

    Each device's frame is pushed ``U(0, jitter_s)`` after its tick. Per group: from the push
    of its last frame to the fused frame (processing), and from the push of its first frame
    (processing plus waiting for the others), ms. Ticks the replay could not keep (the machine
    busy elsewhere) are counted, not hidden.
    """
    rng = np.random.default_rng(seed)
    devices = list(run.devices)
    by_frame = sorted({fid for (_, fid) in run.views})
    fuser = Fuser(run.calib, run.devices, FuseSettings())
    sync = Synchroniser(devices, 0.5 / rate_hz, 0.1)
    pushed: dict[tuple[str, int], float] = {}
    last: list[float] = []
    first: list[float] = []
    behind = 0
    n = int(seconds * rate_hz)
    t_start = time.monotonic() + 0.1
    for k in range(n):
        fid = by_frame[k % len(by_frame)]
        tick = t_start + k / rate_hz
        if time.monotonic() > tick + jitter_s:
            behind += 1
        for t_arr, d in sorted((tick + float(rng.uniform(0, jitter_s)), d) for d in devices):
            while time.monotonic() < t_arr:
                time.sleep(0.0005)
            v = run.views[(d, fid)]
            pushed[(d, k)] = time.monotonic()
            for g in sync.push(ViewFrame(d, k, k / rate_hz, v.size, v.persons),
                               pushed[(d, k)]):
                fuser.fuse(g)
                done = time.monotonic()
                times = [pushed[(dd, f.frame_id)] for dd, f in g.frames.items()]
                last.append(1000.0 * (done - max(times)))
                first.append(1000.0 * (done - min(times)))
    a, b = np.asarray(last), np.asarray(first)
    return {"from_last_p50_ms": float(np.percentile(a, 50)),
            "from_last_p99_ms": float(np.percentile(a, 99)),
            "from_first_p50_ms": float(np.percentile(b, 50)),
            "from_first_p99_ms": float(np.percentile(b, 99)), "groups": float(a.size),
            "ticks_behind": float(behind)}


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the figures (``--json FILE`` also writes them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--limb-window", type=int, default=None,
                    help="FuseSettings.limb_window (default: its default)")
    args = ap.parse_args(argv)
    settings = (FuseSettings() if args.limb_window is None
                else FuseSettings(limb_window=args.limb_window))
    out: dict[str, Any] = {}
    runs = {}
    for name in ("single", "multi"):
        run = runs[name] = run_scene(name, settings)
        loo = leave_one_out(run)
        pub = leave_one_out_published(run)
        cv = bone_cv(run)
        pf = people_figures(run, 1 if name == "single" else 2)
        out[name] = {"leave_one_out_px": loo, "leave_one_out_published_px": pub,
                     "bone_cv": cv, "people": pf, "fuser": run.report.fuser,
                     "limb_window": run.settings.limb_window}
        print(f"== {name}: {len(run.fused)} groups (limb_window {run.settings.limb_window})")
        print("  leave-one-view-out median px, triangulation: "
              + ", ".join(f"{d} {v:.1f}" for d, v in loo.items()))
        print("  leave-one-view-out median px, published joints: "
              + ", ".join(f"{d} {v:.1f}" for d, v in pub.items()))
        for pid, limbs in cv.items():
            print(f"  id {pid} bone CV %: median {100 * np.median(list(limbs.values())):.1f}, "
                  f"max {100 * max(limbs.values()):.1f} ("
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in limbs.items()) + ")")
        print(f"  people: {pf}")
        if name == "single":
            shifts = estimate_offsets(run)
            # View d at frame f + k matches the others at f: its clock is k frames ahead.
            offsets = {d: -k / 60.0 for d, k in shifts.items()}
            shifted = run_scene(name, settings, offsets_s=offsets)
            loo2 = leave_one_out(shifted)
            cv2 = bone_cv(shifted)
            out[name]["frame_offsets"] = shifts
            out[name]["leave_one_out_px_offsets"] = loo2
            print(f"  estimated frame offsets (60 fps): {shifts}")
            print("  with them, leave-one-view-out median px: "
                  + ", ".join(f"{d} {v:.1f}" for d, v in loo2.items())
                  + f"; bone CV median % {100 * np.median(list(cv2[1].values())):.1f}")
    if not args.no_timing:
        ft = fusion_time(runs["multi"])
        lat = latency(runs["multi"])
        out["fusion_ms"] = ft
        out["latency"] = lat
        print("  fusion ms vs views (2 people): "
              + ", ".join(f"{k}: {v:.2f}" for k, v in ft["views_2_people"].items()))
        print("  fusion ms vs people (4 views): "
              + ", ".join(f"{k}: {v:.2f}" for k, v in ft["people_4_views"].items()))
        print(f"  added latency at 30 Hz, 4 views: {lat}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
