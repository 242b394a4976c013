"""Trains a lifter (single-frame or causal temporal) on DeepMimic, synthetic and real poses.

Every epoch draws fresh samples: new bodies (bone lengths), new virtual cameras, new 2D errors;
DeepMimic frames and real-people pairs are re-used, synthetic poses are new each time. CPU only,
one thread, fixed seeds: the same command gives the same weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from edge.lift3d import COCO17_FLIP, N_FEATURES, N_JOINTS, normalise_2d
from lifter import data, skeleton3d
from lifter.camera import N_CAMERA, camera_features, qca_intrinsics
from lifter.metrics import accel_error, mpjpe, pa_mpjpe
from lifter.model import LifterNet, TemporalConvNet
from lifter.multiperson import VAL_FROM_FRAME, MultiViewSet
from lifter.real import RealSet

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Clips are read at this rate; temporal windows step 2-6 frames (30 to 10 fps).
POOL_FPS = 60.0
EVAL_STRIDE = 2  # held-out sequences at 30 fps
TEMPORAL_STRIDES = (2, 3, 4, 6)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        frames: Input frames K (1 = single-frame lifter).
        width: Hidden width of the MLP.
        blocks: Residual blocks.
        epochs: Passes, each over ``per_epoch`` fresh samples.
        per_epoch: Samples per epoch.
        batch: Mini-batch size.
        lr: Initial Adam learning rate (decays exponentially to ``lr_end``).
        lr_end: Final learning rate.
        mix: Fractions of DeepMimic, synthetic and real-people samples.
        noise: 2D error multiplier (:func:`lifter.data.corrupt`).
        seed: Seed of every random draw.
        multi: Fraction of samples (taken before ``mix`` shares the rest) from the
            triangulated Demo_MultiPerson training frames (real 3D truth).
        sym: Weight of the left-right bone-length symmetry loss (metres).
        arch: ``mlp`` (residual MLP over the K frames concatenated) or ``tcn`` (causal
            temporal convolutions, :class:`lifter.model.TemporalConvNet`; K = 3 ** levels).
        channels: Channels of the temporal convolutions (``tcn`` only).
        camera: Append the current frame's camera-aware input (:mod:`lifter.camera`: root
            offset and scale per focal length) to the K*51 inputs (``mlp`` only).
    """

    frames: int = 1
    width: int = 512
    blocks: int = 2
    epochs: int = 24
    per_epoch: int = 200_000
    batch: int = 256
    lr: float = 1e-3
    lr_end: float = 1e-5
    mix: tuple[float, float, float] = (0.40, 0.45, 0.15)
    noise: float = 1.0
    seed: int = 0
    multi: float = 0.0
    sym: float = 0.0
    arch: str = "mlp"
    channels: int = 256
    camera: bool = False


#: Bones (parent, child) whose left and right lengths the symmetry loss ties (COCO-17).
SYM_BONES: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((5, 7), (6, 8)), ((7, 9), (8, 10)), ((11, 13), (12, 14)), ((13, 15), (14, 16)),
    ((5, 11), (6, 12)))


@dataclass
class Pools:
    """What every epoch samples from.

    Attributes:
        hum: The humanoid.
        train_clips: Training clips at ``POOL_FPS``.
        eval_clips: Held-out clips at ``POOL_FPS``.
        real_train: Real-people training pairs (may be empty).
    """

    hum: skeleton3d.Humanoid
    train_clips: list[skeleton3d.Clip]
    eval_clips: list[skeleton3d.Clip]
    real_train: RealSet | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    multi: MultiViewSet | None = None


def load_pools(cache: Path, real: RealSet | None, multi: MultiViewSet | None = None) -> Pools:
    """Reads the clips from the pybullet wheel in ``cache`` and splits train / held out.

    Args:
        cache: Download folder with the pybullet wheel.
        real: Real-people pairs (world landmarks as targets), or None.
        multi: Triangulated Demo_MultiPerson rows (only the training frames are used), or None.
    """
    wheel = skeleton3d.wheel_path(cache)
    hum = skeleton3d.load_humanoid(wheel)
    clips = skeleton3d.load_clips(wheel, POOL_FPS)
    train = [c for c in clips if c.name not in skeleton3d.HELD_OUT_CLIPS]
    held = [c for c in clips if c.name in skeleton3d.HELD_OUT_CLIPS]
    sizes = {"deepmimic_train_frames_60fps": sum(len(c.root_pos) for c in train),
             "deepmimic_heldout_frames_60fps": sum(len(c.root_pos) for c in held),
             "deepmimic_train_clips": len(train), "deepmimic_heldout_clips": len(held)}
    if real is not None:
        sizes["real_train_frames"] = len(real.kp)
    if multi is not None:
        multi = multi.subset(multi.frame < VAL_FROM_FRAME)
        sizes["multiperson_train_rows"] = len(multi.kp)
    return Pools(hum, train, held, real, sizes, multi)


def _stack_pose(clips: list[skeleton3d.Clip], frame_ix: list[npt.NDArray[np.intp]]
                ) -> skeleton3d.Pose:
    """Rotations of chosen frames (indices per clip, flattened in clip order)."""
    poses = [skeleton3d.clip_pose(c) for c in clips]
    root = np.concatenate([p.root[ix] for p, ix in zip(poses, frame_ix, strict=True)])
    local = {k: np.concatenate([p.local[k][ix] for p, ix in zip(poses, frame_ix, strict=True)])
             for k in poses[0].local}
    return skeleton3d.Pose(root, local)


def deepmimic_windows(rng: np.random.Generator, pools: Pools, n: int, frames: int,
                      clips: list[skeleton3d.Clip] | None = None) -> tuple[F64, F64]:
    """N windows of ``frames`` frames from the clips, world frame, random bodies, mirrored half.

    Returns:
        Joints (n, frames, 17, 3) metres (root-relative, y up) and nothing else useful.
    """
    clips = clips if clips is not None else pools.train_clips
    lens = np.array([len(c.root_pos) for c in clips])
    ci = rng.choice(len(clips), n, p=lens / lens.sum())
    stride = rng.choice(TEMPORAL_STRIDES, n) if frames > 1 else np.ones(n, np.intp)
    stride = np.minimum(stride, np.maximum((lens[ci] - 1) // max(frames - 1, 1), 1))
    span = stride * (frames - 1)
    start = (rng.random(n) * np.maximum(lens[ci] - span, 1)).astype(np.intp)
    per_clip: list[npt.NDArray[np.intp]] = []
    order: list[npt.NDArray[np.intp]] = []
    for k in range(len(clips)):
        w = np.flatnonzero(ci == k)
        order.append(w)
        fr = start[w, None] + stride[w, None] * np.arange(frames)[None, :]
        per_clip.append(np.minimum(fr, lens[k] - 1).reshape(-1))
    pose = _stack_pose(clips, per_clip)
    idx = np.concatenate(order)
    scales = {g: np.repeat(v, frames) for g, v in skeleton3d.bone_scales(rng, n).items()}
    j = skeleton3d.forward_kinematics(pose, pools.hum, scales).reshape(n, frames, 17, 3)
    out = np.empty_like(j)
    out[idx] = j
    flip = rng.random(n) < 0.5
    out[flip] = skeleton3d.mirror(out[flip].reshape(-1, 17, 3)).reshape(-1, frames, 17, 3)
    return out, stride.astype(np.float64)


def synthetic_windows(rng: np.random.Generator, pools: Pools, n: int, frames: int) -> F64:
    """N synthetic windows: single poses repeated-free (frames=1) or smooth moves A -> B.

    Returns:
        (n, frames, 17, 3) metres, root-relative, y up.
    """
    a = data.sample_params(rng, n)
    if frames == 1:
        return skeleton3d.forward_kinematics(
            data.params_to_pose(a), pools.hum, skeleton3d.bone_scales(rng, n))[:, None]
    b = data.sample_params(rng, n)
    # a move covering a random part of the way from A to B, easing in/out
    reach = rng.uniform(0.0, 0.6, n)[:, None]
    t = np.linspace(0.0, 1.0, frames)[None, :] * reach
    s = 0.5 - 0.5 * np.cos(np.pi * t)
    x = a[:, None, :] + s[..., None] * (b - a)[:, None, :]
    x = x + rng.normal(0, 0.01, x.shape)
    scales = {g: np.repeat(v, frames) for g, v in skeleton3d.bone_scales(rng, n).items()}
    return skeleton3d.forward_kinematics(
        data.params_to_pose(x.reshape(n * frames, -1)), pools.hum, scales
    ).reshape(n, frames, 17, 3)


def views_to_xy(rng: np.random.Generator, joints: F64, noise: float = 1.0,
                camera: bool = False) -> tuple[F32, F32]:
    """Windows (n, K, 17, 3) world -> network input (n, K*51) and target (n, 51), last frame.

    With ``camera`` the input has 3 more columns (:func:`lifter.camera.camera_features` of the
    last frame).
    """
    n, k = joints.shape[:2]
    groups = np.repeat(np.arange(n), k)
    v = data.view(rng, joints.reshape(n * k, 17, 3), noise, groups=groups)
    x = normalise_2d(v.kp, v.conf).reshape(n, k * N_JOINTS * N_FEATURES)
    y = v.target.reshape(n, k, N_JOINTS * 3)[:, -1]
    if camera:
        last = np.arange(n) * k + k - 1
        x = np.concatenate([x, camera_features(v.kp[last], v.conf[last], v.principal[last],
                                               v.focal[last])], axis=1)
    return x, y


def real_xy(rng: np.random.Generator, real: RealSet, n: int, frames: int) -> tuple[F32, F32]:
    """N samples of real-people pairs (windows of consecutive frames of one track)."""
    starts = real.window_starts(frames)
    s = starts[rng.integers(0, len(starts), n)]
    idx = s[:, None] + np.arange(frames)[None, :]
    kp = real.kp[idx].reshape(n * frames, 17, 2)
    conf = real.conf[idx].reshape(n * frames, 17)
    # a little extra 2D noise and dropping on top of the model's own errors
    size = real.size_px[idx].reshape(-1)
    kp2, conf2 = data.corrupt(rng, kp.astype(np.float64), size, noise=0.3)
    conf2 = np.minimum(conf2, conf)
    x = normalise_2d(kp2, conf2).reshape(n, frames * N_JOINTS * N_FEATURES)
    y = real.world[idx[:, -1]].reshape(n, N_JOINTS * 3)
    return x, y.astype(np.float32)


def multi_windows(ms: MultiViewSet, frames: int, stride: int) -> npt.NDArray[np.intp]:
    """(n, frames) row indices of causal windows ending at every row of ``ms``.

    The window of a row steps back ``stride`` frames at a time within the same view and person;
    where a frame is missing the oldest frame found is repeated (as a new track starts).
    """
    where = {(int(v), int(p), int(f)): i
             for i, (v, p, f) in enumerate(zip(ms.view, ms.person, ms.frame, strict=True))}
    out = np.empty((len(ms.kp), frames), np.intp)
    for i in range(len(ms.kp)):
        cur = i
        out[i, -1] = i
        for k in range(1, frames):
            cur = where.get((int(ms.view[i]), int(ms.person[i]), int(ms.frame[i]) - k * stride),
                            cur)
            out[i, frames - 1 - k] = cur
    return out


def mirror_2d(kp: F64, conf: F64) -> tuple[F64, F64]:
    """Mirrors (..., 17, 2) pixels and (..., 17) confidence left-right (x -> -x, sides swapped)."""
    k = kp[..., COCO17_FLIP, :].copy()
    k[..., 0] *= -1
    return k, conf[..., COCO17_FLIP]


def mirror_3d(j: F64) -> F64:
    """Mirrors (..., 17, 3) look-at-frame poses left-right (x -> -x, sides swapped)."""
    out = j[..., COCO17_FLIP, :].copy()
    out[..., 0] *= -1
    return np.asarray(out)


def multi_xy(rng: np.random.Generator, ms: MultiViewSet, n: int, frames: int,
             camera: bool = False) -> tuple[F32, F32, F32]:
    """N samples of triangulated real people: input, target (n, 51) and joint weights (n, 17).

    Half are mirrored; joints whose triangulation is not trusted get weight 0. With ``camera``
    the input has 3 more columns (the last frame's camera features, calibrated intrinsics).
    """
    stride = rng.choice(TEMPORAL_STRIDES, n) if frames > 1 else np.ones(n, np.intp)
    wins = {int(s): multi_windows(ms, frames, int(s)) for s in np.unique(stride)}
    rows = rng.integers(0, len(ms.kp), n)
    idx = np.stack([wins[int(s)][r] for s, r in zip(stride, rows, strict=True)])
    kp = ms.kp[idx].reshape(n * frames, 17, 2).astype(np.float64)
    conf = ms.conf[idx].reshape(n * frames, 17).astype(np.float64)
    size = np.repeat(ms.size_px[rows], frames).astype(np.float64)
    kp2, conf2 = data.corrupt(rng, kp, size, noise=0.3)
    conf2 = np.minimum(conf2, conf)
    y = ms.gt[rows].astype(np.float64)
    w = ms.gt_ok[rows].astype(np.float64)
    flip = rng.random(n) < 0.5
    fr = np.repeat(flip, frames)
    kp2[fr], conf2[fr] = mirror_2d(kp2[fr], conf2[fr])
    y[flip] = mirror_3d(y[flip])
    w[flip] = w[flip][:, COCO17_FLIP]
    x = normalise_2d(kp2, conf2).reshape(n, frames * N_JOINTS * N_FEATURES)
    if camera:
        principal, focal = qca_intrinsics()
        c = principal[ms.view[rows]].astype(np.float64)
        c[flip, 0] *= -1  # the image is mirrored about x = 0
        last = np.arange(n) * frames + frames - 1
        x = np.concatenate([x, camera_features(kp2[last], conf2[last], c,
                                               focal[ms.view[rows]])], axis=1)
    return x, y.reshape(n, N_JOINTS * 3).astype(np.float32), w.astype(np.float32)


def epoch_data(rng: np.random.Generator, pools: Pools, cfg: TrainConfig
               ) -> tuple[F32, F32, F32]:
    """One epoch of fresh (input, target, joint weight) triples, shuffled.

    Returns:
        x (n, K*51), y (n, 51) metres and weights (n, 17) (0 for untrusted truth).
    """
    mix = np.array(cfg.mix, np.float64)
    if pools.real_train is None or len(pools.real_train.kp) == 0:
        mix[2] = 0.0
    mix /= mix.sum()
    use_multi = pools.multi is not None and len(pools.multi.kp) > 0 and cfg.multi > 0
    n_multi = int(cfg.per_epoch * cfg.multi) if use_multi else 0
    rest = cfg.per_epoch - n_multi
    n_dm, n_syn = int(rest * mix[0]), int(rest * mix[1])
    n_real = rest - n_dm - n_syn if mix[2] > 0 else 0
    xs, ys, ws = [], [], []
    dm, _ = deepmimic_windows(rng, pools, n_dm, cfg.frames)
    for j in (dm, synthetic_windows(rng, pools, n_syn, cfg.frames)):
        x, y = views_to_xy(rng, j, cfg.noise, cfg.camera)
        xs.append(x)
        ys.append(y)
        ws.append(np.ones((len(x), N_JOINTS), np.float32))
    if n_real and cfg.camera:
        raise ValueError("the camera-aware input needs intrinsics, which the real-people "
                         "pairs lack: set mix[2] = 0")
    if n_real and pools.real_train is not None:
        x, y = real_xy(rng, pools.real_train, n_real, cfg.frames)
        xs.append(x)
        ys.append(y)
        ws.append(np.ones((len(x), N_JOINTS), np.float32))
    if n_multi and pools.multi is not None:
        x, y, w = multi_xy(rng, pools.multi, n_multi, cfg.frames, cfg.camera)
        xs.append(x)
        ys.append(y)
        ws.append(w)
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    p = rng.permutation(len(x))
    return x[p], y[p], w[p]


@dataclass(frozen=True)
class EvalSet:
    """Held-out sequences.

    Attributes:
        x: (n, K*51) network input for each frame (the K frames ending there).
        y: (n, 17, 3) metres, target.
        seq: (n,) sequence id (frames of a sequence contiguous, in time order).
        kp: (n, 17, 2) pixels, the 2D input of each frame.
        conf: (n, 17) confidence.
    """

    x: F32
    y: F32
    seq: npt.NDArray[np.intp]
    kp: F32
    conf: F32


def heldout_deepmimic(pools: Pools, frames: int, noise: float, draws: int = 8,
                      seed: int = 1234) -> EvalSet:
    """The held-out clips at 30 fps, each seen by ``draws`` fixed cameras with random bodies.

    The same seed gives the same cameras, bodies and 2D errors for every model evaluated.
    """
    rng = np.random.default_rng(seed)
    xs, ys, seqs, kps, cfs = [], [], [], [], []
    sid = 0
    for c in pools.eval_clips:
        pose = skeleton3d.clip_pose(c)
        ix = np.arange(0, len(c.root_pos), EVAL_STRIDE)
        sub = skeleton3d.Pose(pose.root[ix], {k: v[ix] for k, v in pose.local.items()})
        for _ in range(draws):
            sc = {g: np.full(len(ix), v[0]) for g, v in skeleton3d.bone_scales(rng, 1).items()}
            j = skeleton3d.forward_kinematics(sub, pools.hum, sc)
            v = data.view(rng, j, noise, groups=np.zeros(len(ix), np.intp))
            f = normalise_2d(v.kp, v.conf)
            # causal windows: frame t sees frames t-K+1..t, the first frame repeated at the start
            w = np.clip(np.arange(len(ix))[:, None] - np.arange(frames - 1, -1, -1)[None, :],
                        0, None)
            xs.append(f[w].reshape(len(ix), -1))
            ys.append(v.target)
            kps.append(v.kp)
            cfs.append(v.conf)
            seqs.append(np.full(len(ix), sid))
            sid += 1
    return EvalSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(seqs),
                   np.concatenate(kps), np.concatenate(cfs))


def make_net(cfg: TrainConfig) -> LifterNet | TemporalConvNet:
    """The untrained network of a configuration."""
    if cfg.arch == "tcn":
        if cfg.camera:
            raise ValueError("the camera-aware input is for arch mlp")
        levels = round(np.log(cfg.frames) / np.log(3))
        if 3 ** levels != cfg.frames:
            raise ValueError(f"arch tcn needs frames = 3 ** levels, not {cfg.frames}")
        return TemporalConvNet(levels, N_FEATURES * N_JOINTS, N_JOINTS * 3, cfg.channels)
    if cfg.arch != "mlp":
        raise ValueError(f"arch {cfg.arch!r}: use mlp or tcn")
    n_in = cfg.frames * N_JOINTS * N_FEATURES + (N_CAMERA if cfg.camera else 0)
    return LifterNet(n_in, N_JOINTS * 3, cfg.width, cfg.blocks)


def predict(net: LifterNet | TemporalConvNet, x: F32) -> F32:
    """Runs the torch network in eval mode: (n, K*51) -> (n, 17, 3) metres."""
    net.eval()
    with torch.no_grad():
        out = np.concatenate([net(torch.from_numpy(x[i:i + 4096])).numpy()
                              for i in range(0, len(x), 4096)])
    return out.reshape(-1, N_JOINTS, 3)


def scores(pred: npt.ArrayLike, ev: EvalSet) -> dict[str, float]:
    """MPJPE, PA-MPJPE and acceleration error (mm) of predictions on an eval set."""
    return {"mpjpe_mm": round(mpjpe(pred, ev.y), 1),
            "pa_mpjpe_mm": round(pa_mpjpe(pred, ev.y), 1),
            "accel_mm": round(accel_error(pred, ev.y, ev.seq), 1)}


def symmetry_loss(pred: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (m) of left and right bone lengths of (b, 17, 3) poses."""
    terms = []
    for (a, b), (c, d) in SYM_BONES:
        la = torch.linalg.vector_norm(pred[:, a] - pred[:, b], dim=-1)
        lc = torch.linalg.vector_norm(pred[:, c] - pred[:, d], dim=-1)
        terms.append((la - lc).abs())
    return torch.stack(terms, 1).mean()


MultiVal = tuple[F32, F32, npt.NDArray[np.bool_], npt.NDArray[np.intp]]


def multi_val(ms: MultiViewSet, frames: int, camera: bool = False,
              focal_guess: bool = False) -> MultiVal:
    """Demo_MultiPerson validation rows (frames >= VAL_FROM_FRAME, fully triangulated).

    Args:
        ms: The Demo_MultiPerson rows.
        frames: K.
        camera: Append the camera features (:mod:`lifter.camera`).
        focal_guess: With ``camera``: the image centre and the longer image side stand in
            for the calibrated principal point and focal length (an uncalibrated camera).

    Returns:
        Input (n, K*51) (30 fps causal windows; +3 columns with ``camera``), truth (n, 17, 3),
        always-true joint mask (n, 17) and view (n,).
    """
    win = multi_windows(ms, frames, 2)
    sel = np.flatnonzero((ms.frame >= VAL_FROM_FRAME) & ms.gt_ok.all(1))
    f = normalise_2d(ms.kp, ms.conf)
    x = f[win[sel]].reshape(len(sel), -1)
    if camera:
        principal, focal = qca_intrinsics()
        c, fl = principal[ms.view[sel]], focal[ms.view[sel]]
        if focal_guess:
            # every Demo_MultiPerson view is 1088 x 1920 (portrait)
            c = np.tile(np.array([[544.0, 960.0]], np.float32), (len(sel), 1))
            fl = np.full(len(sel), 1920.0, np.float32)
        x = np.concatenate([x, camera_features(ms.kp[sel], ms.conf[sel], c, fl)], axis=1)
    return x, ms.gt[sel], ms.gt_ok[sel], ms.view[sel]


def multi_scores(pred: npt.ArrayLike, mv: MultiVal) -> dict[str, float]:
    """PA-MPJPE and MPJPE (mm) on the Demo_MultiPerson validation rows (mean of views)."""
    p = np.asarray(pred)
    pa = [pa_mpjpe(p[mv[3] == v], mv[1][mv[3] == v]) for v in np.unique(mv[3])]
    mp = [mpjpe(p[mv[3] == v], mv[1][mv[3] == v]) for v in np.unique(mv[3])]
    return {"pa_mpjpe_mm": round(float(np.mean(pa)), 1), "mpjpe_mm": round(float(np.mean(mp)), 1)}


def train(cfg: TrainConfig, pools: Pools, ev: EvalSet | None = None,
          mv: MultiVal | None = None) -> tuple[LifterNet | TemporalConvNet, dict[str, Any]]:
    """Trains one lifter.

    Args:
        cfg: Hyper-parameters.
        pools: Data pools.
        ev: Held-out set to report on after each epoch (not used for any choice).
        mv: Demo_MultiPerson validation rows to report on after each epoch.

    Returns:
        The trained network (eval mode) and a training log.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(cfg.seed)
    net = make_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * (cfg.per_epoch // cfg.batch)
    gamma = (cfg.lr_end / cfg.lr) ** (1.0 / max(steps, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    log: dict[str, Any] = {"config": asdict(cfg), "epochs": []}
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        te = time.monotonic()
        x, y, w = epoch_data(rng, pools, cfg)
        t_data = time.monotonic() - te
        net.train()
        xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)
        total = 0.0
        nb = len(x) // cfg.batch
        for b in range(nb):
            xb = xt[b * cfg.batch:(b + 1) * cfg.batch]
            yb = yt[b * cfg.batch:(b + 1) * cfg.batch]
            wb = wt[b * cfg.batch:(b + 1) * cfg.batch]
            pred = net(xb)
            err = torch.linalg.vector_norm((pred - yb).view(-1, N_JOINTS, 3), dim=-1)
            loss = (err * wb).sum() / wb.sum().clamp(min=1.0)
            if cfg.sym > 0:
                loss = loss + cfg.sym * symmetry_loss(pred.view(-1, N_JOINTS, 3))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        entry: dict[str, Any] = {"epoch": epoch + 1, "train_mpjpe_mm": round(total / nb * 1000, 1),
                                 "data_s": round(t_data, 1),
                                 "epoch_s": round(time.monotonic() - te, 1)}
        if ev is not None:
            entry.update(scores(predict(net, ev.x), ev))
        if mv is not None:
            entry["multiperson_val"] = multi_scores(predict(net, mv[0]), mv)
        log["epochs"].append(entry)
        logger.info("epoch %s", entry)
    log["train_s"] = round(time.monotonic() - t0, 1)
    net.eval()
    return net, log
