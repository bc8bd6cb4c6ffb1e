"""Docker volume calls: list with sizes, remove, archive and restore, and streams through exec.

Split from ``engine.py`` because data needs calls no replica does: a volume's
size, its contents as a tar stream, a command's standard output streamed to a
file (``pg_dump``) and a file streamed into a command's standard input
(``pg_restore``). Docker's own archive API (``docker cp``) is not used for a
volume's contents: with ``--userns-remap`` it writes host uids into the tar and
cannot read them back ("cannot be mapped to a host ID"), so a restored
PostgreSQL data directory would not even extract. A short-lived helper
container runs ``tar`` instead, inside the user namespace, so uids inside the
archive are the container's (``postgres`` stays ``postgres``). The helper has no
network, a read-only root, no-new-privileges and only the capabilities tar
needs: to read every file (DAC_READ_SEARCH), and to restore owners and modes
(CHOWN, FOWNER, DAC_OVERRIDE).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import docker
import docker.errors
from docker.utils.socket import STDERR, STDOUT, next_frame_header, read_exactly

from flotilla import labels
from flotilla.errors import BackupError

MOUNT = "/flotilla-volume"  # where a helper container sees the volume
CHUNK = 1 << 16
TAIL = 4096  # bytes of a command's standard error kept for its message
ARCHIVE = ("tar", "--numeric-owner", "-C", MOUNT, "-cf", "-", ".")
EXTRACT = ("tar", "--numeric-owner", "--same-owner", "-p", "-C", MOUNT, "-xf", "-")
READ_CAPS = ("DAC_READ_SEARCH",)
WRITE_CAPS = ("CHOWN", "FOWNER", "DAC_OVERRIDE")


@dataclass(frozen=True)
class VolumeInfo:
    """One of an app's volumes as Docker reports it; ``size`` in bytes, None when Docker does not know."""

    name: str
    app: str
    service: str
    replica: str
    volume: str
    retained: bool
    created: str
    size: int | None

    @classmethod
    def of(cls, found: dict, sizes: dict[str, int]) -> VolumeInfo:
        tags = found.get("Labels") or {}
        return cls(name=found["Name"], app=tags.get(labels.APP, ""), service=tags.get(labels.SERVICE, ""),
                   replica=tags.get(labels.REPLICA, ""), volume=tags.get(labels.VOLUME, ""),
                   retained=tags.get(labels.RETAIN) == "true", created=found.get("CreatedAt", ""),
                   size=sizes.get(found["Name"]))


@dataclass(frozen=True)
class StreamResult:
    """How a streamed command ended: its exit code and the tail of its standard error."""

    exit_code: int
    stderr: str


def listed(api: docker.APIClient, label_filter: list[str], *, sizes: bool) -> list[VolumeInfo]:
    """The volumes matching ``label_filter``; with ``sizes``, Docker's disk usage of each (a slower call)."""
    found = api.volumes(filters={"label": label_filter}).get("Volumes") or []
    usage = {}
    if sizes and found:
        usage = {v["Name"]: (v.get("UsageData") or {}).get("Size") for v in api.df().get("Volumes") or []}
        usage = {name: size for name, size in usage.items() if isinstance(size, int) and size >= 0}
    return sorted((VolumeInfo.of(v, usage) for v in found), key=lambda v: v.name)


def recreate(api: docker.APIClient, name: str) -> None:
    """Empty volume ``name`` by removing it and creating it again with the same labels (before a restore)."""
    tags = api.inspect_volume(name).get("Labels") or {}
    api.remove_volume(name)
    api.create_volume(name, labels=tags)


def archive(api: docker.APIClient, *, volume: str, image: str, sink: BinaryIO, owner: dict) -> StreamResult:
    """Write the contents of ``volume`` to ``sink`` as a tar stream (its service must be stopped)."""
    api.inspect_volume(volume)  # NotFound: a mount would create it, empty and unlabelled
    with _helper(api, volume=volume, image=image, command=ARCHIVE, caps=READ_CAPS, owner=owner) as helper:
        return _run_helper(api, helper, source=None, sink=sink)


def unarchive(api: docker.APIClient, *, volume: str, image: str, source: BinaryIO, owner: dict) -> StreamResult:
    """Extract the tar stream ``source`` into ``volume``, owners and modes as archived."""
    with _helper(api, volume=volume, image=image, command=EXTRACT, caps=(*READ_CAPS, *WRITE_CAPS),
                 owner=owner, writable=True) as helper:
        return _run_helper(api, helper, source=source, sink=None)


def exec_stream(api: docker.APIClient, container_id: str, command: tuple[str, ...], *,
                source: BinaryIO | None, sink: BinaryIO | None) -> StreamResult:
    """Run ``command`` in a running container: ``source`` to its standard input, its standard output to ``sink``."""
    exec_id = api.exec_create(container_id, list(command), stdin=source is not None, stdout=True, stderr=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)
    stderr = _pump(sock, source=source, sink=sink)
    return StreamResult(exit_code=_exit_code(api.exec_inspect(exec_id)), stderr=stderr)


@contextlib.contextmanager
def _helper(api: docker.APIClient, *, volume: str, image: str, command: tuple[str, ...], caps: tuple[str, ...],
            owner: dict, writable: bool = False) -> Iterator[str]:
    host = api.create_host_config(
        mounts=[{"Type": "volume", "Source": volume, "Target": MOUNT, "ReadOnly": not writable}],
        network_mode="none", cap_drop=["ALL"], cap_add=list(caps), security_opt=["no-new-privileges"],
        read_only=True, auto_remove=False,
    )
    created = api.create_container(image, entrypoint=[command[0]], command=list(command[1:]), user="0:0",
                                   stdin_open=True, tty=False, labels={**owner, labels.ROLE: "helper"},
                                   host_config=host, network_disabled=True)
    try:
        yield created["Id"]
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(created["Id"], force=True)


def _run_helper(api: docker.APIClient, helper: str, *, source: BinaryIO | None, sink: BinaryIO | None
                ) -> StreamResult:
    sock = api.attach_socket(helper, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    api.start(helper)
    stderr = _pump(sock, source=source, sink=sink)
    return StreamResult(exit_code=int(api.wait(helper).get("StatusCode", -1)), stderr=stderr)


def _pump(sock, *, source: BinaryIO | None, sink: BinaryIO | None) -> str:
    """Feed ``source`` to a multiplexed attach/exec socket while its stdout goes to ``sink``; stderr's tail back."""
    raw = getattr(sock, "_sock", sock)
    writer = threading.Thread(target=_feed, args=(raw, source), daemon=True)
    writer.start()
    tail = bytearray()
    try:
        while (header := next_frame_header(sock)) != (-1, -1):
            kind, size = header
            if size <= 0:
                continue
            data = read_exactly(sock, size)
            if kind == STDOUT and sink is not None:
                sink.write(data)
            elif kind == STDERR:
                tail = (tail + data)[-TAIL:]
    finally:
        writer.join()
        with contextlib.suppress(OSError):
            sock.close()
    return tail.decode("utf-8", "replace")


def _feed(raw: socket.socket, source: BinaryIO | None) -> None:
    """Write ``source`` to the process's standard input, then close it (the process sees the end)."""
    try:
        while source is not None and (chunk := source.read(CHUNK)):
            raw.sendall(chunk)
    except OSError:
        pass  # the process ended before reading everything: its exit code says why
    finally:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)


def _exit_code(inspected: dict) -> int:
    code = inspected.get("ExitCode")
    if code is None:
        raise BackupError("the command's exit code is unknown (Docker reports it still running)")
    return int(code)
