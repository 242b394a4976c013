"""The HTTP demo server as a subprocess on the real demo clip, and a small real HTTP client.

Used by test_http.py and test_viewer.py. The server is ``edge-pose serve``
(real models, the real clip looping, the real transport); the client is the standard library's
``http.client`` (each request on a fresh connection, as probes and scripts do).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "test-artefacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class DemoServer:
    """``edge-pose serve --source demo`` on a free port (stopped with SIGTERM)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 http: Mapping[str, object] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port()
        args = [sys.executable, "-m", "edge.cli", "serve", "--source", "demo",
                "--host", host, "--port", str(self.port)]
        for k, v in (http or {}).items():
            args += ["--http", f"{k}={v}"]
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("EDGE_POSE_HTTP_TOKEN", "CREDENTIALS_DIRECTORY")}
        environ.update(env or {})
        OUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / f"serve_{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=environ, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.token: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> DemoServer:
        """Waits for ``/readyz`` 200 (models loaded, frames flowing)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Reply:
        h = dict(headers or {})
        if self.token is not None and "Authorization" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def processed(self) -> tuple[float, int]:
        """(monotonic time, frames processed so far), from /v1/stats."""
        return time.monotonic(), int(self.get("/v1/stats").json()["frames"]["processed"])

    def core_fps(self, seconds: float) -> float:
        """Frames the core processed per second over the next ``seconds``."""
        t0, n0 = self.processed()
        time.sleep(seconds)
        t1, n1 = self.processed()
        return (n1 - n0) / (t1 - t0)


def sse_events(resp: http.client.HTTPResponse) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each Server-Sent Event read from ``resp``."""
    event, ident = "message", None
    data: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            return
        text = line.decode().rstrip("\r\n")
        if not text:
            if data:
                yield event, "\n".join(data), ident
            event, ident, data = "message", None, []
        elif text.startswith("event:"):
            event = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].lstrip())
        elif text.startswith("id:"):
            ident = text[3:].strip()


class StreamReader(threading.Thread):
    """A client reading ``/v1/stream`` in the background, keeping annotations by frame id."""

    def __init__(self, server: DemoServer, path: str = "/v1/stream") -> None:
        super().__init__(daemon=True)
        self.server, self.path = server, path
        self.annotations: dict[int, dict[str, Any]] = {}
        self.stats: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            self._conn = conn = self.server.connection(timeout=60)
            h = {"Authorization": f"Bearer {self.server.token}"} if self.server.token else {}
            conn.request("GET", self.path, headers=h)
            resp = conn.getresponse()
            assert resp.status == 200, resp.status
            for event, data, _ in sse_events(resp):
                if self._halt.is_set():
                    return
                if event == "annotation":
                    a = json.loads(data)
                    self.annotations[int(a["frame_id"])] = a
                elif event == "stats":
                    self.stats.append(json.loads(data))
        except BaseException as e:
            if not self._halt.is_set():
                self.error = e

    def close(self) -> None:
        self._halt.set()
        if self._conn is not None and self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
            self._conn.close()
        self.join(timeout=10)
