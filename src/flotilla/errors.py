"""The one tree of exceptions Flotilla raises, so callers catch by meaning.

Every error a user can see is a FlotillaError: it carries a message that says
what is wrong and what to do, and an exit code for the CLI. SDK and OS errors
are translated at the boundary that meets them (``raise ... from exc``), so no
caller above an engine ever sees a docker or sqlite exception. The daemon's
API answers each class with the HTTP status on its right (500 for the rest).

    FlotillaError                 exit 1
    ├── SpecError                 exit 2  the spec has problems (all of them, at once)      HTTP 400
    ├── BadRequestError           exit 2  a malformed request: not JSON, a bad count...    HTTP 400
    │   └── CertificateError              a certificate/key pair that cannot serve (mismatch, expired...)
    ├── NotFoundError             exit 3  no such app, service or replica                  HTTP 404
    │   └── SecretNotFoundError           no such secret (or version of it) for the app
    ├── ConflictError             exit 4  the request clashes with the current state       HTTP 409
    ├── EngineError               exit 5  the container engine refused or failed
    │   ├── EngineUnavailableError        Docker Engine cannot be reached                  HTTP 503
    │   ├── RolloutFailedError            a cluster's rollout cannot finish (ImagePullBackOff...)
    │   └── ImageError                    an image could not be pulled or built (nothing changed)
    │       ├── RegistryAuthError             a registry refused the credentials
    │       └── BuildError                    a build failed; the message holds the step's output
    ├── DaemonError               exit 6  the Flotilla daemon failed or cannot be reached
    │   └── DaemonUnavailableError
    ├── WaitTimeoutError          exit 7  a wait ran out (for example ``up --timeout``)
    ├── GatewayError              exit 8  the gateway (HAProxy) failed, refused a change or cannot start
    │   ├── NoFreeSlotError               a backend has no free server slot for another replica
    │   └── AcmeError                     an ACME server refused an order, or could not be reached
    ├── SecretsError              exit 9  the vault or the master key cannot do what was asked
    │   ├── WrongKeyError                 the master key is not the one the vault was written with
    │   └── TamperedError                 a stored secret failed its integrity check
    ├── CacheError                exit 10 a cache node (Redis) refused a command or did not answer
    ├── BackupError               exit 11 a backup or restore failed (the backup is listed as failed)
    └── TaskFailedError           exit 12 a before_deploy command failed or timed out (nothing changed) HTTP 409
"""

from __future__ import annotations

from dataclasses import dataclass


class FlotillaError(Exception):
    """Base of every error Flotilla reports to a user."""

    exit_code = 1
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message}


@dataclass(frozen=True)
class Problem:
    """One problem in a spec: where it is, what is wrong and what to do."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""

    @classmethod
    def at_path(cls, path: str, message: str, *, hint: str = "") -> Problem:
        """A problem found by the daemon, which knows the dotted path but not the
        line (the CLI puts its file name in ``file`` before printing)."""
        return cls(file="<spec>", line=0, column=0, path=path, message=message, hint=hint)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        text = f"{where}: {self.path or '(top)'}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class SpecError(FlotillaError):
    """The spec is invalid; ``problems`` lists every problem found."""

    exit_code = 2
    code = "invalid_spec"

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": [p.to_dict() for p in self.problems]}


class BadRequestError(FlotillaError):
    """A request the daemon cannot read: a body that is not JSON, a count that is not a number."""

    exit_code = 2
    code = "bad_request"


class CertificateError(BadRequestError):
    """A certificate and key that cannot serve: unreadable, not a pair, expired; never quotes the key."""

    code = "bad_certificate"


class NotFoundError(FlotillaError):
    exit_code = 3
    code = "not_found"


class SecretNotFoundError(NotFoundError):
    """No such secret (or version of it) for the app."""

    code = "secret_not_found"


class ConflictError(FlotillaError):
    exit_code = 4
    code = "conflict"


class EngineError(FlotillaError):
    exit_code = 5
    code = "engine_error"


class EngineUnavailableError(EngineError):
    code = "engine_unavailable"


class RolloutFailedError(EngineError):
    """A Kubernetes rollout that waiting will not finish: the message holds the cluster's reasons."""

    code = "rollout_failed"


class ImageError(EngineError):
    """An image could not be pulled, resolved or built; nothing that runs was changed."""

    code = "image_error"


class RegistryAuthError(ImageError):
    code = "registry_auth"


class BuildError(ImageError):
    code = "build_failed"


class DaemonError(FlotillaError):
    exit_code = 6
    code = "daemon_error"


class DaemonUnavailableError(DaemonError):
    code = "daemon_unavailable"


class WaitTimeoutError(FlotillaError):
    """A wait ran out before what it waited for happened; the message says what is still pending."""

    exit_code = 7
    code = "timeout"


class GatewayError(FlotillaError):
    """The gateway (HAProxy) could not be reached, refused a change or could not start."""

    exit_code = 8
    code = "gateway_error"


class NoFreeSlotError(GatewayError):
    """A backend has no free server slot for another replica (its slots are pre-declared)."""

    code = "no_free_slot"


class AcmeError(GatewayError):
    """Obtaining a certificate through ACME failed: the message names the step and the server's reason."""

    code = "acme_error"


class SecretsError(FlotillaError):
    """The vault or the master key cannot do what was asked; the message says why."""

    exit_code = 9
    code = "secrets_error"


class WrongKeyError(SecretsError):
    """The master key is not the one the vault was written with."""

    code = "wrong_master_key"


class TamperedError(SecretsError):
    """A stored secret failed its integrity check: the vault file was modified or damaged."""

    code = "vault_tampered"


class CacheError(FlotillaError):
    """A cache node (Redis) refused a command or did not answer; the message names the node."""

    exit_code = 10
    code = "cache_error"


class BackupError(FlotillaError):
    """A backup or restore failed: its command exited non-zero, wrote nothing, or its archive did not
    verify. A failed backup is recorded (``flotilla backups ls``) and never listed as good."""

    exit_code = 11
    code = "backup_failed"


class TaskFailedError(FlotillaError):
    """A ``before_deploy`` command exited non-zero or ran out of time: the rollout did not begin, the old
    replicas keep serving; the message holds the command's last output lines."""

    exit_code = 12
    code = "task_failed"


_BY_CODE = {
    cls.code: cls
    for cls in (
        FlotillaError,
        BadRequestError,
        CertificateError,
        NotFoundError,
        SecretNotFoundError,
        ConflictError,
        EngineError,
        EngineUnavailableError,
        RolloutFailedError,
        ImageError,
        RegistryAuthError,
        BuildError,
        DaemonError,
        DaemonUnavailableError,
        WaitTimeoutError,
        GatewayError,
        NoFreeSlotError,
        AcmeError,
        SecretsError,
        CacheError,
        WrongKeyError,
        TamperedError,
        BackupError,
        TaskFailedError,
    )
}


def error_from_dict(data: dict) -> FlotillaError:
    """Rebuild an error sent over the daemon API as the same class."""
    if data.get("error") == SpecError.code:
        return SpecError([Problem(**p) for p in data.get("problems", [])])
    cls = _BY_CODE.get(data.get("error", ""), FlotillaError)
    return cls(data.get("message", "unknown error"))
