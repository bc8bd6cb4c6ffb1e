"""Who HAProxy's workers run as once their ports are bound: an unprivileged account, never root.

The gateway parses every request from the outside, so its workers should own
nothing. HAProxy starts as root (the daemon's user), binds its listening
sockets, and each worker then switches to the ``user`` and ``group`` of its
global section, keeping no capability. The master process stays root: on a
reload (SIGUSR2) it parses the new configuration and binds any new address
itself, and the Runtime API socket it creates stays private to root.

The account is the ``haproxy`` system user that Debian's package creates for
exactly this, or ``FLOTILLA_GATEWAY_USER``. Not ``nobody``: the demo images'
replicas run as uid 65534, and a worker sharing their uid could signal or
trace them. A daemon that is not root runs HAProxy as itself, with nothing to
drop.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flotilla.errors import GatewayError

USER_SETTING = "FLOTILLA_GATEWAY_USER"
DEFAULT_USER = "haproxy"


@dataclass(frozen=True)
class WorkerAccount:
    """The user and group HAProxy's workers switch to (``user``/``group`` in the global section)."""

    user: str
    group: str


def worker_user(environ: Mapping[str, str]) -> str:
    """The account named by the daemon's environment, else ``haproxy``."""
    return environ.get(USER_SETTING) or DEFAULT_USER


def worker_account(user: str, *, euid: Callable[[], int] = os.geteuid) -> WorkerAccount | None:
    """``user`` and its primary group; None when the daemon is not root (there is nothing to drop).

    A user that does not exist, or is root, is a GatewayError that says what to
    do: the gateway does not start with workers that keep root.
    """
    if euid() != 0:
        return None
    fix = f"install the haproxy package (it creates the user) or set {USER_SETTING} to an unprivileged user"
    try:
        entry = pwd.getpwnam(user)
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        raise GatewayError(f"the gateway's workers run as user {user!r}, which does not exist on this host "
                           f"(or has no group); {fix}") from None
    if entry.pw_uid == 0:
        raise GatewayError(f"the gateway's workers may not run as {user!r} (uid 0); {fix}")
    return WorkerAccount(user=entry.pw_name, group=group)
