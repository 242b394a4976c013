"""A Debian container booted with systemd as PID 1 (``systemd-nspawn``), for the unit's checks.

The root (Debian bookworm amd64 with systemd, Mosquitto and Python) is made once by
``debootstrap`` and kept in the cache folder; each run boots a throwaway overlayfs copy of it,
sharing the host's network (so pip reaches the registry and the tests reach the container's
Mosquitto on a loopback port). Commands run inside through ``nsenter`` into PID 1's namespaces
(no ``machinectl``: the host need not run systemd).

``python deploy/ci/container.py probe`` prints whether this machine can boot such a container
and exits 0 (it can) or 1 (it cannot, with the reason): CI runs the checks exactly where the
capability exists, and there a failure is a failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("EDGE_POSE_CI_CACHE", "/var/cache/edge-pose-ci"))
SUITE = "bookworm"
INCLUDE = ("systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,ca-certificates,"
           "mosquitto,mosquitto-clients")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = Path(__file__).resolve().parents[2]


class ContainerError(RuntimeError):
    """The container could not be built, booted or reached."""


def capability() -> str | None:
    """Why this machine cannot boot a systemd container, or None when it can.

    Probes what ``systemd-nspawn --boot`` needs: root, the tools, new mount and PID namespaces,
    and a writable cgroup hierarchy systemd can run in (cgroup v2, or v1 with ``name=systemd``).
    """
    if os.geteuid() != 0:
        return "not root"
    for tool, pkg in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                      ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install {pkg})"
    res = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return f"cannot make mount and PID namespaces: {res.stderr.strip()}"
    mounts = Path("/proc/self/mounts").read_text()
    cg = None
    for line in mounts.splitlines():
        where, fstype, opts = line.split()[1:4]
        v2 = fstype == "cgroup2" and where == "/sys/fs/cgroup"
        if v2 or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
            cg = Path(where)
    if cg is None:
        return "no cgroup hierarchy for systemd (cgroup2 or name=systemd) under /sys/fs/cgroup"
    probe = cg / f"edge-pose-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        return f"the cgroup hierarchy {cg} is not writable: {e}"
    return None


def _mirror() -> str:
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in f.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sl = Path("/etc/apt/sources.list")
    if sl.exists():
        for line in sl.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if not p.startswith("["))
    raise ContainerError("no Debian mirror found in /etc/apt/sources.list{,.d}")


def base_root(cache: Path = CACHE, log: Path | None = None) -> Path:
    """The cached amd64 root, made with debootstrap when missing (~2-3 min)."""
    mirror = _mirror()
    key = hashlib.sha256(f"{SUITE} {INCLUDE} {mirror} v1".encode()).hexdigest()[:12]
    root = cache / f"amd64-{SUITE}-{key}"
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    out = open(log or cache / "debootstrap-amd64.log", "w")  # noqa: SIM115 - closed below
    with out:
        res = subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE,
                              str(tmp), mirror], stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise ContainerError(f"debootstrap failed (exit {res.returncode}), see {out.name}")
    subprocess.run(["chroot", str(tmp), "apt-get", "clean"], check=True)
    # Boot quietly and quickly: no getty, no apt timers.
    for unit in ("console-getty.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        subprocess.run(["chroot", str(tmp), "systemctl", "mask", "-q", unit], check=False)
    (tmp / ".complete").touch()
    tmp.rename(root)
    return root


class Container:
    """A booted throwaway copy of the cached root; use as a context manager."""

    def __init__(self, cache: Path = CACHE) -> None:
        """Sets the container up (nothing runs until ``start``).

        Args:
            cache: Where the root and pip's downloads are kept between runs.
        """
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)  # a clean machine has none yet
        self.work = Path(tempfile.mkdtemp(prefix="nspawn.", dir=cache))
        self.root = self.work / "root"
        self.log = self.work / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self._mounted = False

    def _init_pid(self) -> int:
        """The container's init: the child of systemd-nspawn in a PID namespace of its own.

        systemd-nspawn briefly has a second child (its "outer child", which sets the container
        up and exits), in the host's PID namespace: taking the first child found made
        ``nsenter`` fail for the whole boot when that was the one caught (CI, session 7).

        Returns:
            Its PID, or 0 while there is none.
        """
        if self.proc is None:
            return 0
        own = os.readlink("/proc/self/ns/pid")
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        for kid in kids:
            try:
                if os.readlink(f"/proc/{kid}/ns/pid") != own:
                    return int(kid)
            except OSError:  # gone meanwhile
                continue
        return 0

    def start(self, timeout: float = 240.0) -> Container:
        """Mounts the overlay, copies this checkout to /root/edge-pose and boots."""
        base = base_root(self.cache)
        for d in ("upper", "ovl", "root"):
            (self.work / d).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.work}/upper,workdir={self.work}/ovl",
                        str(self.root)], check=True)
        self._mounted = True
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt",
                     self.root / "etc/ssl/certs/ca-certificates.crt")
        dest = self.root / "root" / "edge-pose"
        git = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, capture_output=True)
        if git.returncode == 0:
            for f in filter(None, git.stdout.split(b"\0")):
                src = REPO / os.fsdecode(f)
                if src.is_file():
                    (dest / os.fsdecode(f)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest / os.fsdecode(f))
        else:  # not a git checkout: everything but the venv and outputs
            shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".venv", "out", "cache"))
        pip_cache = self.cache / "pip-amd64"
        pip_cache.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                 f"--directory={self.root}", "--machine=edge-pose-ci",
                 "--resolv-conf=copy-host", f"--bind={pip_cache}:/root/.cache/pip"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.pid1:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode}: "
                                     f"{self.log.read_text(errors='replace')[-2000:]}")
            self.pid1 = self._init_pid()
            time.sleep(0.2)
        if not self.pid1:
            raise ContainerError("systemd-nspawn started no init")
        state = ""
        while time.monotonic() < end:
            if not Path(f"/proc/{self.pid1}").exists():  # not the init after all: look again
                self.pid1 = self._init_pid()
                time.sleep(0.2)
                continue
            res = self.run("systemctl", "is-system-running", check=False)
            state = res.stdout.strip() or res.stderr.strip()
            if state in ("running", "degraded"):
                return self
            time.sleep(0.5)
        raise ContainerError(f"the container's systemd did not come up in {timeout:.0f} s "
                             f"(last state: {state or 'no answer'}); "
                             f"{self.log.read_text(errors='replace')[-2000:]}")

    def run(self, *cmd: str, check: bool = True, timeout: float = 600.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs ``cmd`` inside the container (as root, clean environment)."""
        res = subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p",
                              "-r", "-w", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8",
                              "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "HOME=/root", *cmd],
                             capture_output=True, text=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise ContainerError(f"{' '.join(cmd)} failed (exit {res.returncode}):\n"
                                 f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Writes a file into the container's file system."""
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    def stop(self) -> None:
        """Powers the container off (SIGTERM to nspawn asks systemd to), then cleans up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._mounted:
            if subprocess.run(["umount", str(self.root)]).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], check=False)
            self._mounted = False
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Container:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a failed boot must not leave the container running or mounted
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """``probe``: 0 when this machine can boot the container, else 1 and the reason."""
    if argv[1:] != ["probe"]:
        print("usage: container.py probe", file=sys.stderr)
        return 2
    reason = capability()
    print(f"systemd containers: {'can boot' if reason is None else 'cannot boot: ' + reason}")
    return 0 if reason is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
