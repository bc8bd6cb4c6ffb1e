"""The keys that loosen or tighten how a service's process may act: user, read_only, cap_add, pids_limit.

Every replica starts with no capability, ``no-new-privileges``, a pids limit
and no core dumps (engines/docker/containers.py); these keys, named as
Docker Compose names them, are the exceptions a service may ask for. Kept
apart from ``service_parts.py`` because the rules (the Linux capability
list, the shape of a user) are their own small world. Like every check,
these report each problem and carry on, returning None when invalid.
"""

from __future__ import annotations

import re

from flotilla.spec import checks as c
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import DEFAULT_PIDS_LIMIT

# Linux capabilities (include/uapi/linux/capability.h, 0..40), without the CAP_ prefix.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
MAX_PIDS_LIMIT = 4_194_304
# Docker's user-namespace remapping (--userns-remap=default) maps 65536 uids
# into the container; a uid above that cannot run there.
MAX_ID = 65535
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_USER_HINT = ('write "UID", "UID:GID", "NAME" or "NAME:GROUP" (the image\'s /etc/passwd names), '
              f'ids from 0 to {MAX_ID}, e.g. user: "65534:65534"')


def user(rep: Reporter, path: Path, value: object, ctx: object = None) -> str | None:
    """``UID[:GID]`` or ``NAME[:GROUP]``, as Docker's ``--user`` takes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # user: 65534, unquoted
    text = c.text(rep, path, value, hint=_USER_HINT)
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) > 2 or not all(_id_ok(part) for part in parts):
        rep.add(path, f"invalid user {c.clip(text)}", _USER_HINT)
        return None
    return text


def _id_ok(part: str) -> bool:
    if part.isascii() and part.isdigit():
        return int(part) <= MAX_ID
    return bool(_NAME.fullmatch(part))


def read_only(rep: Reporter, path: Path, value: object, ctx: object = None) -> bool | None:
    return c.boolean(rep, path, value)


def cap_add(rep: Reporter, path: Path, value: object, ctx: object = None) -> tuple[str, ...] | None:
    """Capability names (``NET_BIND_SERVICE`` or ``CAP_NET_BIND_SERVICE``, any case), each once."""
    items = c.sequence(rep, path, value, of="Linux capability names, e.g. [NET_BIND_SERVICE]")
    if items is None:
        return None
    names: list[str] = []
    for index, item in enumerate(items):
        name = _capability(rep, path + (index,), item)
        if name is not None and name in names:
            rep.add(path + (index,), f"capability {name} is listed twice", "list each capability once")
        elif name is not None:
            names.append(name)
    return tuple(names) if len(names) == len(items) else None


def _capability(rep: Reporter, path: Path, value: object) -> str | None:
    text = c.text(rep, path, value, hint="give a capability name such as NET_BIND_SERVICE")
    if text is None:
        return None
    name = text.upper().removeprefix("CAP_")
    if name == "ALL":
        rep.add(path, "cap_add: ALL would give back every capability",
                "list only the capabilities the service needs, e.g. [NET_BIND_SERVICE]")
        return None
    if name not in CAPABILITIES:
        rep.add(path, f"unknown capability {c.clip(text)}", _capability_hint(name))
        return None
    return name


def _capability_hint(name: str) -> str:
    """``did you mean 'NET_BIND_SERVICE'?`` for NET_BIND (a prefix first, then a close spelling)."""
    starting = [cap for cap in CAPABILITIES if cap.startswith(name)]
    if len(starting) == 1:
        return f"did you mean {starting[0]!r}?"
    close = c.suggest(name, CAPABILITIES)
    return close if close.startswith("did you mean") else (
        "use a Linux capability from capabilities(7), e.g. NET_BIND_SERVICE")


def pids_limit(rep: Reporter, path: Path, value: object, ctx: object = None) -> int | None:
    return c.integer(rep, path, value, low=1, high=MAX_PIDS_LIMIT,
                     hint=f"give the most processes and threads a replica may have at once, from 1 "
                          f"to {MAX_PIDS_LIMIT} (default {DEFAULT_PIDS_LIMIT})")
