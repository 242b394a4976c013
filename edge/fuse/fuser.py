"""Several views, one skeleton: association across views, triangulation, identities, smoothing.

For each :class:`~edge.fuse.sync.FrameGroup` (one frame per device, taken at about one time):

1. **Views.** Each device's frame is checked against its camera (image size; a device whose
   size does not match is not fused, and says so once); joints are undistorted.
2. **Association.** For every pair of views, the cost of pairing person i of one with person j
   of the other is the mean symmetric epipolar distance of their joints (the smaller of the two
   left/right labellings); each pair of views is solved as an assignment
   (``scipy.optimize.linear_sum_assignment``) and pairs under ``assoc_threshold_px`` are kept.
   Pairs are then merged into people, cheapest first, at most one person per view, a merge of
   three or more views accepted only when a trial triangulation reprojects into each of them
   within ``assoc_threshold_px``. People seen by fewer than ``min_views`` views are kept out.
3. **Triangulation.** Confidence-weighted DLT per joint from the undistorted joints with
   confidence >= ``min_conf``; a view whose left/right labels are swapped (the mirrored
   labelling reprojects better) is relabelled; the view with the largest median reprojection
   error is dropped while it is over ``reproj_threshold_px`` and more than ``min_views``
   remain.
4. **Identities.** Fused people are matched to the previous ones by mean 3D joint distance
   (an assignment again, within ``id_match_m``); new people take the lowest free ID of the
   fuser's own pool; an ID unseen for ``id_max_age_s`` returns to the pool.
5. **Smoothing.** A One-Euro filter in 3D per fused ID (:mod:`edge.smooth`), reset when the ID
   is given to a new person.
6. **Steady limbs.** Per fused ID, :class:`edge.lift3d.LimbLengths` (a causal running median
   of each limb bone over the last ``limb_window`` frames) rescales the upper arms, forearms,
   thighs and shanks along their own direction: the 2D model's joints drift along the limbs
   from frame to frame, a person's bones do not. The published reprojection error is that of
   the published joints (smoothed and steadied), in the views used.

Pure logic (no I/O, no clocks: times are the groups' capture times; the wall time spent is
measured only for the stats).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from edge.fuse import triangulate as tri
from edge.fuse.calib import Calibration, CalibrationError, CameraModel
from edge.fuse.sync import FrameGroup
from edge.fuse.views import JOINTS, N_JOINTS, ViewFrame, ViewPerson
from edge.lift3d import LIMB_CHAINS, LimbLengths
from edge.smooth import OneEuroConfig, OneEuroFilter

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: COCO-17 index of each joint's mirror (left <-> right).
FLIP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15], dtype=np.intp)
SCHEMA_VERSION = 1
#: The joints of :data:`edge.lift3d.LIMB_CHAINS`.
_LIMB_JOINTS = np.unique(np.asarray(LIMB_CHAINS))
#: Default ``limb_window`` (frames; bench/fuse_bench.py measures the choices).
LIMB_WINDOW_DEFAULT = 90


def _nanmean(a: F64) -> float:
    """Mean of the finite values (inf when none)."""
    f = a[np.isfinite(a)]
    return float(f.mean()) if f.size else np.inf


def _view_medians(err: F64) -> F64:
    """(V, J) reprojection errors (NaN: unused) -> (V,) median per view (inf: none used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give inf below
        med = np.nanmedian(err, axis=1)
    return np.where(np.isfinite(med), med, np.inf)


class FuseSettings(BaseModel):
    """How frames are grouped, associated, triangulated, identified and smoothed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance_s: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="largest capture-time difference within a group, s; default half the "
        "devices' frame period")
    max_wait_s: float = Field(
        default=0.1, ge=0.0, le=5.0,
        description="longest a group waits for a lagging device, s (then it is left out)")
    max_clock_offset_s: float = Field(
        default=2.0, gt=0.0, le=3600.0,
        description="a device whose clock is further off the others' is not fused")
    min_views: int = Field(default=2, ge=2, le=16,
                           description="views a person must be seen in to be fused")
    min_conf: float = Field(default=0.5, ge=0.0, le=1.0,
                            description="joints below this confidence are not used")
    min_joints: int = Field(default=6, ge=1, le=N_JOINTS,
                            description="joints a fused person must have")
    assoc_threshold_px: float = Field(
        default=60.0, gt=0.0, le=1000.0,
        description="largest mean epipolar / trial reprojection distance of one person's "
        "joints across two views, px")
    reproj_threshold_px: float = Field(
        default=25.0, gt=0.0, le=1000.0,
        description="a view whose median reprojection error is over this is dropped while "
        "more than min_views remain, px")
    joint_outliers: bool = Field(
        default=False, description="leave a view out of a joint that reprojects over "
        "reproj_threshold_px (while >= 2 views remain)")
    fix_swaps: bool = Field(default=True,
                            description="undo a view's left/right label swaps")
    max_people: int = Field(default=10, ge=1, le=64, description="people fused per frame")
    same_body_m: float = Field(
        default=0.25, gt=0.0, le=2.0,
        description="two fused people closer than this (median joint distance, m) are one "
        "human split between groups of views: merged, or the less complete one dropped")
    id_match_m: float = Field(
        default=0.5, gt=0.0, le=10.0,
        description="largest mean joint distance for a fused person to keep an ID, m")
    id_max_age_s: float = Field(
        default=1.0, gt=0.0, le=600.0,
        description="an ID unseen this long returns to the pool, s")
    smoothing: bool = Field(default=True, description="One-Euro filter in 3D per fused ID")
    min_cutoff: float = Field(default=1.0, gt=0.0, le=100.0,
                              description="One-Euro cutoff at rest, Hz")
    beta: float = Field(default=20.0, ge=0.0, le=1e4,
                        description="One-Euro cutoff increase per m/s, Hz")
    d_cutoff: float = Field(default=1.0, gt=0.0, le=100.0,
                            description="One-Euro derivative cutoff, Hz")
    limb_window: int = Field(
        default=LIMB_WINDOW_DEFAULT, ge=0, le=10_000,
        description="frames of each fused ID's history whose median limb lengths its limbs "
        "are rescaled to (upper arms, forearms, thighs, shanks); 0 turns it off")

    def tolerance_for(self, period_s: float) -> float:
        """The grouping tolerance: ``tolerance_s`` or half of ``period_s``."""
        return self.tolerance_s if self.tolerance_s is not None else 0.5 * period_s


@dataclass(frozen=True, eq=False)
class FusedPerson:
    """One fused person.

    Attributes:
        id: Fused ID (the fuser's own pool, from 1).
        joints: (17, 3) float64 COCO-17 joints, metres, calibration world frame (NaN: not
            triangulated).
        reproj_px: (17,) float64 mean reprojection error over the views used, px (NaN).
        views: Per joint, the devices used.
        sources: ``(device, frame_id, person_id)`` of the 2D people fused.
    """

    id: int
    joints: F64
    reproj_px: F64
    views: tuple[tuple[str, ...], ...]
    sources: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, eq=False)
class FusedFrame:
    """The fusion of one frame group.

    Attributes:
        seq: Index of the group in the fuser's input.
        ts: Capture time of the group, s.
        frames: Device -> frame_id of the frames in the group.
        skew_s: Device -> its frame's ts minus the group's, s.
        persons: Fused people.
        missing: Devices expected but not in the group (lagging, dropped, rejected).
    """

    seq: int
    ts: float
    frames: dict[str, int]
    skew_s: dict[str, float]
    persons: list[FusedPerson] = field(default_factory=list)
    missing: tuple[str, ...] = ()

    @property
    def frame_id(self) -> int:
        """The frame id of the first device in the group (equal in synchronised files)."""
        return next(iter(self.frames.values()), -1)

    def to_json(self) -> dict[str, Any]:
        """The fused frame as JSON (edge/fused.schema.json); identical inputs, identical text."""
        persons = []
        for p in self.persons:
            joints: dict[str, Any] = {}
            for j, name in enumerate(JOINTS):
                x = p.joints[j]
                if not np.all(np.isfinite(x)):
                    joints[name] = None
                    continue
                joints[name] = {"x": round(float(x[0]), 5), "y": round(float(x[1]), 5),
                                "z": round(float(x[2]), 5),
                                "reproj_px": round(float(p.reproj_px[j]), 2),
                                "views": list(p.views[j])}
            errs = p.reproj_px[np.isfinite(p.reproj_px)]
            persons.append({
                "id": p.id,
                "reproj_px": round(float(np.median(errs)), 2) if errs.size else None,
                "joints": joints,
                "sources": [{"device": d, "frame_id": f, "person_id": i}
                            for d, f, i in p.sources]})
        return {"v": SCHEMA_VERSION, "seq": self.seq, "ts": round(self.ts, 6),
                "frames": dict(self.frames),
                "skew_ms": {d: round(1000.0 * s, 3) for d, s in self.skew_s.items()},
                "missing": list(self.missing), "joints": "coco17",
                "units": "metres, the calibration's world frame", "persons": persons}


@dataclass
class _Track:
    id: int
    joints: F64  # (17, 3) last triangulated position of each joint, m
    last_ts: float
    filt: OneEuroFilter | None
    limbs: LimbLengths | None = None
    published: F64 = field(default_factory=lambda: np.full((N_JOINTS, 3), np.nan))

    def steady_limbs(self, joints: F64) -> F64:
        """(17, 3) joints (NaN: not triangulated) -> the same with limbs at their median length.

        A joint not triangulated this frame stands in for :class:`LimbLengths` at its last
        published place (so its bones' history stays finite) and stays NaN in the output; a
        joint whose bone starts at such a joint keeps its triangulated place. Until every limb
        joint has been seen once, the limbs are left as triangulated (and no history kept: a
        NaN length would void the median for a whole window).
        """
        if self.limbs is None:
            return joints
        missing: npt.NDArray[np.bool_] = np.asarray(~np.isfinite(joints).all(-1))
        filled = np.where(missing[:, None], self.published, joints)
        ok: npt.NDArray[np.bool_] = np.asarray(np.isfinite(filled).all(-1))
        if not ok[_LIMB_JOINTS].all():
            self.published = np.where(missing[:, None], self.published, joints)
            return joints
        # Root-relative for LimbLengths' float32 (world coordinates are metres from the origin).
        centre = filled[ok].mean(0) if ok.any() else np.zeros(3)
        out = np.asarray(self.limbs((filled - centre)[None], [self.id])[0], np.float64) + centre
        keep: npt.NDArray[np.bool_] = missing | ~np.isfinite(out).all(-1)
        for chain in LIMB_CHAINS:
            for k in (0, 1):
                if keep[chain[k]]:
                    keep[chain[k + 1]] = True
        out = np.where(keep[:, None], joints, out)
        self.published = np.where(missing[:, None], self.published, out)
        return np.asarray(out)


@dataclass
class _Obs:
    """One 2D person of one view, undistorted."""

    view: int
    device: str
    frame_id: int
    person: int
    x: F64  # (17, 2) undistorted px
    w: F64  # (17,) weights (conf, 0 below min_conf)


class Fuser:
    """Turns frame groups into fused 3D people (see the module's docstring)."""

    def __init__(self, calib: Calibration, devices: dict[str, str],
                 settings: FuseSettings | None = None) -> None:
        """Creates a fuser with no identities.

        Args:
            calib: The scene's calibration.
            devices: Device ID -> camera name in ``calib``.
            settings: Settings; defaults to ``FuseSettings()``.

        Raises:
            CalibrationError: A device maps to a camera the calibration lacks, or two devices
                map to one camera.
        """
        self.settings = settings if settings is not None else FuseSettings()
        where = f"calibration {calib.source}" if calib.source else "calibration"
        for dev, cam in devices.items():
            if cam not in calib.cameras:
                raise CalibrationError(f"{where}: device {dev} maps to camera {cam!r}, which "
                                       f"it lacks (cameras: {', '.join(calib.cameras)})")
        cams = list(devices.values())
        dup = sorted({c for c in cams if cams.count(c) > 1})
        if dup:
            raise CalibrationError(f"{where}: several devices map to camera(s) "
                                   f"{', '.join(dup)}")
        self.calib = calib
        self.devices = dict(devices)
        self._order = list(devices)
        self._cam: dict[str, CameraModel] = {d: calib.cameras[c] for d, c in devices.items()}
        self._proj = {d: c.projection for d, c in self._cam.items()}
        self._f: dict[tuple[str, str], F64] = {}
        for a in self._order:
            for b in self._order:
                if a != b:
                    ca, cb = self._cam[a], self._cam[b]
                    self._f[(a, b)] = tri.fundamental(ca.k, ca.r, ca.t, cb.k, cb.r, cb.t)
        self.reset()

    def reset(self) -> None:
        """Forgets identities, filters and counts."""
        self._tracks: dict[int, _Track] = {}
        self._seq = 0
        self._last_t: float | None = None
        self._size_ok: dict[str, bool] = {}
        self._size_seen: dict[str, tuple[int, int]] = {}
        self._counts: dict[str, int] = {k: 0 for k in (
            "groups", "groups_too_few_views", "frames_size_mismatch", "frames_unknown_device",
            "persons_fused", "persons_single_view", "persons_rejected", "persons_split_rejoined",
            "views_dropped", "joint_views_dropped",
            "swaps_fixed", "ids_issued")}
        self._ms: list[float] = []

    # ------------------------------------------------------------------ checks

    def _usable(self, frame: ViewFrame) -> bool:
        dev = frame.device
        if dev not in self._cam:
            self._counts["frames_unknown_device"] += 1
            return False
        ok = self._size_ok.get(dev)
        if ok is None or self._size_seen.get(dev) != frame.size:  # first frame, or resized
            cam_name = self.devices[dev]
            problems = self.calib.check_sizes({cam_name: frame.size})
            ok = not problems
            self._size_ok[dev] = ok
            self._size_seen[dev] = frame.size
            for p in problems:
                logger.warning("device %s: %s; its frames are not fused", dev, p)
        if not ok:
            self._counts["frames_size_mismatch"] += 1
        return ok

    # ------------------------------------------------------------------ association

    def _observations(self, group: FrameGroup) -> list[_Obs]:
        s = self.settings
        obs = []
        for vi, dev in enumerate(self._order):
            frame = group.frames.get(dev)
            if frame is None or not self._usable(frame):
                continue
            cam = self._cam[dev]
            for p in frame.persons:
                w = np.where(p.conf >= s.min_conf, p.conf, 0.0)
                if int((w > 0).sum()) < s.min_joints:
                    continue
                obs.append(_Obs(vi, dev, frame.frame_id, p.id, cam.undistort(p.kp), w))
        for d in group.frames:
            if d not in self._cam:
                self._counts["frames_unknown_device"] += 1
        return obs

    def _pair_costs(self, a: list[_Obs], b: list[_Obs]) -> F64:
        """(len(a), len(b)) mean symmetric epipolar distance of the people's joints, px.

        Joints seen (weight > 0) in both count; the smaller of b's two left/right labellings is
        taken; inf where fewer than 4 joints are shared.
        """
        s = self.settings
        f = self._f[(a[0].device, b[0].device)]
        xa = np.stack([o.x for o in a])  # (na, J, 2)
        wa = np.stack([o.w for o in a]) > 0
        best = np.full((len(a), len(b)), np.inf)
        for perm in (None, FLIP) if s.fix_swaps else (None,):
            xb = np.stack([o.x if perm is None else o.x[perm] for o in b])  # (nb, J, 2)
            wb = np.stack([o.w if perm is None else o.w[perm] for o in b]) > 0
            d = tri.epipolar_distance(f, xa[:, None], xb[None])  # (na, nb, J)
            both = wa[:, None] & wb[None] & np.isfinite(d)
            n = both.sum(-1)
            mean = np.where(both, d, 0.0).sum(-1) / np.maximum(n, 1)
            best = np.minimum(best, np.where(n >= min(4, s.min_joints), mean, np.inf))
        return best

    def _solve(self, obs: list[_Obs], views: list[int], drop: bool = True
               ) -> tuple[F64, F64, list[int], int, F64]:
        """Triangulates one person from some of its views, fixing swaps and dropping views.

        Args:
            obs: Every observation of the group.
            views: Indices into ``obs`` of this person's observations (one per view).
            drop: Drop views over ``reproj_threshold_px`` (else only fix swaps: a trial).

        Returns:
            (17, 3) joints, (V, 17) reprojection errors px (NaN where unused), the views kept
            (indices into ``views``), swaps fixed, and (V, 17, 2) the views' undistorted joints
            px with their swaps undone.
        """
        s = self.settings
        proj = np.stack([self._proj[obs[v].device] for v in views])
        x = np.stack([obs[v].x for v in views])
        w = np.stack([obs[v].w for v in views])
        keep = list(range(len(views)))
        swaps = 0

        def run(x: F64, w: F64, keep: list[int]) -> tuple[F64, F64]:
            xw = tri.triangulate(proj[keep], x[keep], w[keep])
            err = tri.reprojection_error(proj[keep], x[keep], xw)
            return xw, np.where(w[keep] > 0, err, np.nan)

        def score(err: F64) -> float:
            e = err[np.isfinite(err)]
            return float(np.mean(e)) if e.size else np.inf

        xw, err = run(x, w, keep)
        if s.fix_swaps and len(views) == 2:
            # Two views: only the pair's relative labelling matters; try the other one.
            xf, wf = x.copy(), w.copy()
            xf[1], wf[1] = x[1][FLIP], w[1][FLIP]
            xw2, err2 = run(xf, wf, keep)
            if score(err2) < 0.8 * score(err):
                x, w, xw, err = xf, wf, xw2, err2
                swaps += 1
        elif s.fix_swaps:
            # Three or more: the view whose mirrored labelling lands closest to the current
            # triangulation's projection (relative to its own labelling) is mirrored, and the
            # person triangulated again, while that helps (one DLT per swap, not per view).
            for _ in range(len(views)):
                pr = tri.project(proj, xw)  # (V, J, 2)
                e_own = np.where(w > 0, np.linalg.norm(pr - x, axis=-1), np.nan)
                e_mir = np.where(w[:, FLIP] > 0,
                                 np.linalg.norm(pr - x[:, FLIP], axis=-1), np.nan)
                gain = np.array([_nanmean(e_own[i]) - _nanmean(e_mir[i])
                                 for i in range(len(views))])
                i = int(np.argmax(gain))
                if not gain[i] > 0:
                    break
                xf, wf = x.copy(), w.copy()
                xf[i], wf[i] = x[i][FLIP], w[i][FLIP]
                xw2, err2 = run(xf, wf, keep)
                if not score(err2) < 0.8 * score(err):
                    break
                x, w, xw, err = xf, wf, xw2, err2
                swaps += 1
        while drop and len(keep) > s.min_views:
            med = _view_medians(err)
            worst = int(np.argmax(med))
            if med[worst] <= s.reproj_threshold_px:
                break
            keep = [k for i, k in enumerate(keep) if i != worst]
            self._counts["views_dropped"] += 1
            xw, err = run(x, w, keep)
        if drop and s.joint_outliers:
            # Per joint, the same rule: a view whose joint reprojects over the threshold is left
            # out of that joint while >= 2 views remain (an occluded limb guessed in one view);
            # a joint that still reprojects over twice the threshold is not given.
            for _ in range(len(keep) - 2):
                e = np.where(np.isfinite(err), err, -1.0)
                worst_v = np.argmax(e, axis=0)
                worst_e = e[worst_v, np.arange(N_JOINTS)]
                n_used = np.isfinite(err).sum(0)
                bad = (worst_e > s.reproj_threshold_px) & (n_used > 2)
                if not bad.any():
                    break
                w = w.copy()
                for j in np.flatnonzero(bad):
                    w[keep[int(worst_v[j])], j] = 0.0
                self._counts["joint_views_dropped"] += int(bad.sum())
                xw, err = run(x, w, keep)
            worst_all = np.where(np.isfinite(err), err, 0.0).max(0)
            xw = np.where((worst_all > 2.0 * s.reproj_threshold_px)[:, None], np.nan, xw)
            err = np.where((worst_all > 2.0 * s.reproj_threshold_px)[None], np.nan, err)
        full = np.full((len(views), N_JOINTS), np.nan)
        full[keep] = err
        return xw, full, keep, swaps, x

    def triangulate_person(self, people: dict[str, ViewPerson], drop: bool = False
                           ) -> tuple[F64, F64]:
        """Triangulates one person given its 2D person in some views, as :meth:`fuse` does.

        Args:
            people: Device -> the person's 2D joints in that device's view (>= 2 devices).
            drop: Also drop views over ``reproj_threshold_px`` (else only fix swaps).

        Returns:
            (17, 3) joints, m (NaN where fewer than 2 views see a joint), and (V, 17)
            reprojection errors px in the order of ``people`` (NaN where unused).
        """
        s = self.settings
        obs = [_Obs(self._order.index(d), d, 0, p.id, self._cam[d].undistort(p.kp),
                    np.where(p.conf >= s.min_conf, p.conf, 0.0)) for d, p in people.items()]
        xw, err, _, _, _ = self._solve(obs, list(range(len(obs))), drop=drop)
        return xw, err

    def _associate(self, obs: list[_Obs]) -> list[list[int]]:
        """Groups observations into people (lists of observation indices, one per view)."""
        s = self.settings
        by_view: dict[int, list[int]] = {}
        for i, o in enumerate(obs):
            by_view.setdefault(o.view, []).append(i)
        vs = sorted(by_view)
        edges: list[tuple[float, int, int]] = []
        pair: dict[tuple[int, int], float] = {}  # every pair's cost, for the merge check
        for ai, va in enumerate(vs):
            for vb in vs[ai + 1:]:
                ia, ib = by_view[va], by_view[vb]
                cost = self._pair_costs([obs[i] for i in ia], [obs[j] for j in ib])
                for r, i in enumerate(ia):
                    for c, j in enumerate(ib):
                        pair[(i, j)] = pair[(j, i)] = float(cost[r, c])
                big = np.where(np.isfinite(cost), cost, 1e9)
                rows, cols = linear_sum_assignment(big)
                for r, c in zip(rows, cols, strict=True):
                    if cost[r, c] <= s.assoc_threshold_px:
                        edges.append((float(cost[r, c]), ia[r], ib[c]))
        edges.sort()
        cluster = {i: [i] for i in range(len(obs))}  # representative -> members
        owner = list(range(len(obs)))
        for _, i, j in edges:
            ci, cj = owner[i], owner[j]
            if ci == cj:
                continue
            merged = cluster[ci] + cluster[cj]
            if len({obs[m].view for m in merged}) != len(merged):
                continue  # two people of one view
            # Every cross pair must be epipolar-consistent (cheap, from the costs above)...
            if any(pair[(m, n)] > s.assoc_threshold_px
                   for m in cluster[ci] for n in cluster[cj]):
                continue
            # ...and a trial triangulation must reproject into every view.
            if len(merged) >= 3:
                views = sorted(merged, key=lambda m: obs[m].view)
                _, err, _, _, _ = self._solve(obs, views, drop=False)
                if not np.all(_view_medians(err) <= s.assoc_threshold_px):
                    continue
            for m in cluster.pop(cj):
                owner[m] = ci
            cluster[ci] = merged
        return [sorted(m, key=lambda k: obs[k].view) for m in cluster.values()]

    def _one_per_body(self, obs: list[_Obs], people: list[tuple[F64, Any]]
                      ) -> list[tuple[F64, Any]]:
        """Fuses again, or drops, people whose 3D bodies overlap: one human split in two.

        Association can split one human into two groups of views (for example two views
        each, when one cross pair of views is over the epipolar threshold), and both then
        triangulate to the same place. Two bodies cannot share a space, so a later person
        within ``same_body_m`` (median joint distance) of an earlier one is merged into it when
        their views are disjoint and the union triangulates consistently (views dropped by
        the reprojection rule as usual), and is dropped otherwise.

        Args:
            obs: This group's observations.
            people: ``(joints (J, 3) m, (members, err, keep, xs))``, best first.

        Returns:
            The people left, best first.
        """
        s = self.settings
        out: list[tuple[F64, Any]] = []
        for xw, extra in people:
            twin = -1
            for k, (xk, _) in enumerate(out):
                d = np.linalg.norm(xw - xk, axis=-1)
                ok = np.isfinite(d)
                if ok.sum() >= 3 and float(np.median(d[ok])) <= s.same_body_m:
                    twin = k
                    break
            if twin < 0:
                out.append((xw, extra))
                continue
            self._counts["persons_split_rejoined"] += 1
            members = out[twin][1][0] + extra[0]
            if len({obs[m].view for m in members}) == len(members):
                members = sorted(members, key=lambda m: obs[m].view)
                mx, err, keep, swaps, xs = self._solve(obs, members)
                n_ok = int(np.isfinite(mx).all(-1).sum())
                med = np.nanmedian(err) if np.isfinite(err).any() else np.inf
                if n_ok >= s.min_joints and med <= 2.0 * s.reproj_threshold_px:
                    self._counts["swaps_fixed"] += swaps
                    out[twin] = (mx, (members, err, keep, xs))
        return out

    # ------------------------------------------------------------------ identities

    def _assign_ids(self, people: list[tuple[F64, Any]], ts: float) -> list[int]:
        s = self.settings
        for tid in [t for t, tr in self._tracks.items() if ts - tr.last_ts > s.id_max_age_s]:
            del self._tracks[tid]
        tids = sorted(self._tracks)
        ids = [-1] * len(people)
        if tids and people:
            a = np.stack([xw for xw, _ in people])  # (P, J, 3)
            b = np.stack([self._tracks[t].joints for t in tids])  # (T, J, 3)
            d = np.linalg.norm(a[:, None] - b[None], axis=-1)  # (P, T, J)
            ok = np.isfinite(d)
            n = ok.sum(-1)
            cost = np.where(n >= 3, np.where(ok, d, 0.0).sum(-1) / np.maximum(n, 1), 1e9)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= s.id_match_m:
                    ids[r] = tids[c]
        used = set(ids)
        nxt = 1
        for i in range(len(people)):
            if ids[i] >= 0:
                continue
            while nxt in used or nxt in self._tracks:
                nxt += 1
            ids[i] = nxt
            used.add(nxt)
            self._counts["ids_issued"] += 1
            cfg = OneEuroConfig(s.min_cutoff, s.beta, s.d_cutoff)
            self._tracks[nxt] = _Track(nxt, people[i][0], ts,
                                       OneEuroFilter(cfg) if s.smoothing else None,
                                       LimbLengths(s.limb_window) if s.limb_window else None)
        for i, tid in enumerate(ids):
            tr = self._tracks[tid]
            # Keep the last known position of joints not seen this time.
            tr.joints = np.where(np.isfinite(people[i][0]), people[i][0], tr.joints)
            tr.last_ts = ts
        return ids

    # ------------------------------------------------------------------ main

    def fuse(self, group: FrameGroup) -> FusedFrame:
        """Fuses one frame group.

        Args:
            group: Frames of several devices at one capture time (times not before the
                previous group's).

        Returns:
            The fused frame (possibly with no people: fewer than ``min_views`` views, nobody
            seen twice, or inconsistent views).
        """
        t0 = time.perf_counter()
        s = self.settings
        self._counts["groups"] += 1
        obs = self._observations(group)
        used_views = {o.view for o in obs} | {
            self._order.index(d) for d in group.frames
            if d in self._cam and self._size_ok.get(d, False)}
        people: list[tuple[F64, Any]] = []
        if len(used_views) < s.min_views:
            self._counts["groups_too_few_views"] += 1
        else:
            for members in self._associate(obs):
                if len(members) < s.min_views:
                    self._counts["persons_single_view"] += 1
                    continue
                xw, err, keep, swaps, xs = self._solve(obs, members)
                self._counts["swaps_fixed"] += swaps
                n_ok = int(np.isfinite(xw).all(-1).sum())
                med = np.nanmedian(err) if np.isfinite(err).any() else np.inf
                if n_ok < s.min_joints or not med <= 2.0 * s.reproj_threshold_px:
                    self._counts["persons_rejected"] += 1
                    continue
                people.append((xw, (members, err, keep, xs)))
            # Most complete and consistent people first, at most max_people.
            people.sort(key=lambda p: (-int(np.isfinite(p[0]).all(-1).sum()),
                                       float(np.nanmedian(p[1][1]))))
            people = self._one_per_body(obs, people)[:s.max_people]
        # Times handed to the filters never go back (a caller may pass groups out of order).
        t = group.ts if self._last_t is None else max(group.ts, self._last_t)
        self._last_t = t
        ids = self._assign_ids(people, t)
        persons = []
        for tid, (xw, (members, err, keep, xs)) in sorted(zip(ids, people, strict=True),
                                                      key=lambda q: q[0]):
            tr = self._tracks[tid]
            joints = tr.filt(xw, t) if tr.filt is not None else xw
            joints = tr.steady_limbs(np.where(np.isfinite(xw), joints, np.nan))
            kept = [members[k] for k in keep]
            used = np.isfinite(err[keep]) if keep else np.zeros((0, N_JOINTS), bool)
            views = tuple(tuple(obs[kept[i]].device for i in range(len(kept)) if used[i, j])
                          for j in range(N_JOINTS))
            # The reprojection error of the joints published, in the views that made them.
            ek = np.full((len(kept), N_JOINTS), np.nan)
            if kept:
                ek = np.where(used, tri.reprojection_error(
                    np.stack([self._proj[obs[m].device] for m in kept]), xs[keep], joints),
                    np.nan)
            cnt = np.isfinite(ek).sum(0)
            rp = np.where(cnt > 0, np.nansum(ek, 0) / np.maximum(cnt, 1), np.nan)
            rp = np.where(np.isfinite(joints).all(-1), rp, np.nan)
            persons.append(FusedPerson(
                tid, np.asarray(joints, np.float64), np.asarray(rp, np.float64), views,
                tuple((obs[m].device, obs[m].frame_id, obs[m].person) for m in kept)))
        self._counts["persons_fused"] += len(persons)
        frames = {d: group.frames[d].frame_id for d in self._order if d in group.frames}
        skew = group.skew_s
        out = FusedFrame(self._seq, group.ts, frames, {d: skew[d] for d in frames}, persons,
                         tuple(d for d in self._order if d not in group.frames))
        self._seq += 1
        self._ms.append(1000.0 * (time.perf_counter() - t0))
        if len(self._ms) > 10000:
            del self._ms[:5000]
        return out

    def stats(self) -> dict[str, Any]:
        """Counts, active IDs and the fusion time.

        Returns:
            Groups, people fused / kept out (single view) / rejected, views dropped, swaps
            fixed, frames refused (size, device), active IDs, fusion time p50/p99 in ms.
        """
        ms = np.asarray(self._ms)
        return {**self._counts,
                "ids_active": sorted(self._tracks),
                "size_mismatch_devices": sorted(d for d, ok in self._size_ok.items() if not ok),
                "fuse_ms": ({"p50": float(np.percentile(ms, 50)),
                             "p99": float(np.percentile(ms, 99))} if ms.size else None)}
