"""The pinned inputs of the crowd benchmark: clips with people, photos without.

People come from the clips ``models.sources`` already pins (the Sports2D demo, shipped in the
repository as ``edge/assets/sports2d_demo.mp4``, and the Pose2Sim single-person views) and from
the Pose2Sim multi-person views pinned here, all fetched with ``models.sources.extract``
(``pip download --no-deps``, sha256 of the wheel and of every member checked).

Backgrounds are OpenCV's sample photos from Debian's ``opencv-doc`` package, fetched with
``apt-get download`` and checked the same way: the ``.deb`` against its pinned sha256, every
photo against its own. Each photo was looked at: none shows a person (``messi5.jpg``,
``basketball1/2.png``, ``left01..14.jpg`` and the cartoon on ``graf1.png`` are left out for that).
"""

from __future__ import annotations

import logging
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.runtime import sha256_file
from models import sources
from models.sources import SourceError, sha256_bytes

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

#: The Sports2D demo as the repository ships it (the same file as ``sources.SPORTS2D_DEMO``).
SPORTS2D_DEMO = ROOT / "edge" / "assets" / "sports2d_demo.mp4"

#: The four views of Pose2Sim's two-person demo (1088x1920 portrait, 60 fps, 100 frames each).
POSE2SIM_MULTI_CAMS = sources.POSE2SIM_MULTI_CAMS


@dataclass(frozen=True)
class DebPackage:
    """One pinned Debian package, fetched with ``apt-get download``.

    Attributes:
        name: Package name.
        version: Pinned version.
        filename: The file ``apt-get download`` writes.
        sha256: sha256 of that file (hex).
    """

    name: str
    version: str
    filename: str
    sha256: str


OPENCV_DOC = DebPackage("opencv-doc", "4.6.0+dfsg-12", "opencv-doc_4.6.0+dfsg-12_all.deb",
                        "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a")
_DATA = "./usr/share/doc/opencv-doc/examples/data/"

#: Background photos (name -> sha256), each looked at and free of people.
BACKGROUNDS: dict[str, str] = {
    "building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
    "home.jpg": "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2",
    "aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
    "aero3.jpg": "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4",
    "leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
    "leuvenB.jpg": "5bb41a60038a2baa5d8ea0eaba55e6e3050d721b254cf79d8d8998d7e49d664a",
    "left.jpg": "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321",
    "aloeL.jpg": "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
    "rubberwhale1.png": "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796",
    "board.jpg": "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f",
    "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
    "stuff.jpg": "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5",
}


def fetch_deb(package: DebPackage, cache: Path) -> Path:
    """Returns the package's ``.deb`` in ``cache``, fetching it with ``apt-get download``.

    Args:
        package: What to fetch.
        cache: Download folder (``cache/dl``).

    Returns:
        Path of the verified ``.deb``.

    Raises:
        SourceError: When apt fails or the file's sha256 is not the pinned one.
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / package.filename
    if not path.is_file():
        cmd = ["apt-get", "download", f"{package.name}={package.version}"]
        logger.info("fetching %s=%s with apt-get download", package.name, package.version)
        try:
            subprocess.run(cmd, check=True, cwd=cache, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SourceError(f"could not fetch {package.name}={package.version} with "
                              f"`{' '.join(cmd)}` (run `apt-get update` first?): {e}") from None
        if not path.is_file():
            raise SourceError(f"`{' '.join(cmd)}` did not write {path}")
    actual = sha256_file(path)
    if actual != package.sha256:
        raise SourceError(f"{path}: sha256 {actual} is not the pinned {package.sha256}; delete "
                          "it and fetch again, or check the pin")
    return path


def opencv_doc_files(files: Mapping[str, str], cache: Path) -> dict[str, Path]:
    """Extracts pinned files of ``opencv-doc``'s example data (once) and checks their sha256.

    Args:
        files: File name in ``examples/data/`` -> its sha256.
        cache: The cache folder (``cache``): the ``.deb`` goes to ``cache/dl``, the files to
            ``cache/build/src/opencv-doc``.

    Returns:
        File name -> path, in the order of ``files``.

    Raises:
        SourceError: When the package or a file does not match its pin.
    """
    dest = cache / "build" / "src" / "opencv-doc"
    out = {name: dest / name for name in files}
    if not all(p.is_file() and sha256_file(p) == files[p.name] for p in out.values()):
        deb = fetch_deb(OPENCV_DOC, cache / "dl")
        dest.mkdir(parents=True, exist_ok=True)
        # dpkg-deb unpacks the data archive whatever its compression; tarfile reads the stream.
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        wanted = {_DATA + name: name for name in files}
        with tarfile.open(fileobj=proc.stdout, mode="r|") as t:
            for info in t:
                name = wanted.get(info.name)
                f = t.extractfile(info) if name else None
                if name and f is not None:
                    data = f.read()
                    if sha256_bytes(data) != files[name]:
                        raise SourceError(f"{name} in {deb.name}: sha256 {sha256_bytes(data)} is "
                                          f"not the pinned {files[name]}")
                    out[name].write_bytes(data)
        if proc.wait() != 0:
            raise SourceError(f"dpkg-deb could not read {deb}")
        missing = [n for n, p in out.items() if not p.is_file()]
        if missing:
            raise SourceError(f"{deb.name} lacks {missing}")
    return out


def backgrounds(cache: Path) -> dict[str, Path]:
    """The background photos (:data:`BACKGROUNDS`), extracted and checked."""
    return opencv_doc_files(BACKGROUNDS, cache)


def clips(cache: Path, pose2sim: bool = True) -> list[Path]:
    """The clips people are cut from, fetched and checked.

    Args:
        cache: The cache folder (``cache``): wheels in ``cache/dl``, members under
            ``cache/build/src`` (where ``make models`` puts them).
        pose2sim: Include the eight Pose2Sim views (else only the Sports2D demo).

    Returns:
        Video paths: the Sports2D demo, then Pose2Sim single-person cam01-04, then multi-person
        cam01-04.
    """
    if sha256_file(SPORTS2D_DEMO) != sources.SPORTS2D_DEMO.sha256:
        raise SourceError(f"{SPORTS2D_DEMO}: sha256 is not the pinned "
                          f"{sources.SPORTS2D_DEMO.sha256}; restore it from git")
    out = [SPORTS2D_DEMO]
    if pose2sim:
        for member in (*sources.POSE2SIM_CAMS, *POSE2SIM_MULTI_CAMS):
            out.append(sources.extract(member, cache / "dl", cache / "build" / "src"))
    return out
