"""Real photos with people for the tests, fetched from pinned registry packages (sha256-checked).

* ``zidane.jpg`` (1280x720, two men, upper bodies) and ``bus.jpg`` (810x1080, a street with
  people) from the PyPI wheel ``ultralytics==8.4.190`` (``ultralytics/assets/``);
* ``messi5.jpg`` (548x342, one player, full body) from Debian's ``opencv-doc`` 4.6.0 package
  (``usr/share/doc/opencv-doc/examples/data/``).

They are fetched once into ``cache/testdata/`` (git-ignored) with the registries' ordinary
clients (``pip download``, ``apt-get download``) and checked against the sha256 pinned here, of
the package file and of the image. A test that needs one and cannot get it fails.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.runtime import sha256_file

CACHE = Path(__file__).resolve().parent.parent / "cache" / "testdata"


@dataclass(frozen=True)
class Photo:
    """One pinned image inside one pinned package file."""

    package_file: str
    package_sha256: str
    member: str
    sha256: str


ULTRALYTICS_WHEEL = ("ultralytics-8.4.190-py3-none-any.whl",
                     "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8")
OPENCV_DOC_DEB = ("opencv-doc_4.6.0+dfsg-12_all.deb",
                  "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a")

PHOTOS = {
    "zidane.jpg": Photo(*ULTRALYTICS_WHEEL, "ultralytics/assets/zidane.jpg",
                        "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    "bus.jpg": Photo(*ULTRALYTICS_WHEEL, "ultralytics/assets/bus.jpg",
                     "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    "messi5.jpg": Photo(*OPENCV_DOC_DEB,
                        "./usr/share/doc/opencv-doc/examples/data/messi5.jpg",
                        "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
}


def _download(package_file: str, sha256: str) -> Path:
    path = CACHE / package_file
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        if package_file.endswith(".whl"):
            name, version = package_file.split("-")[:2]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(CACHE),
                   f"{name}=={version}"]
        else:
            name, version = package_file.split("_")[:2]
            cmd = ["apt-get", "download", f"{name}={version}"]
        subprocess.run(cmd, check=True, cwd=CACHE, stdout=subprocess.DEVNULL)
    actual = sha256_file(path)
    if actual != sha256:
        raise AssertionError(f"{path}: sha256 {actual} is not the pinned {sha256}")
    return path


def photo(name: str) -> Path:
    """The path of a pinned photo, fetched and verified on first use.

    Args:
        name: A key of :data:`PHOTOS`.

    Returns:
        The verified image file in ``cache/testdata/``.

    Raises:
        AssertionError: When a package or the image does not match its pinned sha256.
        subprocess.CalledProcessError: When the registry client fails.
    """
    p = PHOTOS[name]
    out = CACHE / name
    if out.is_file() and sha256_file(out) == p.sha256:
        return out
    archive = _download(p.package_file, p.package_sha256)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            out.write_bytes(z.read(p.member))
    else:
        dest = CACHE / (archive.name + ".d")
        subprocess.run(["dpkg-deb", "-x", str(archive), str(dest)], check=True)
        out.write_bytes((dest / p.member).read_bytes())
    actual = sha256_file(out)
    if actual != p.sha256:
        raise AssertionError(f"{name} from {archive.name}: sha256 {actual} is not the pinned "
                             f"{p.sha256}")
    return out
