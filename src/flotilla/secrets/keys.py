"""The master key: the one secret that unlocks every other, and where it comes from.

The vault encrypts every value under a single 256-bit key that only the daemon
holds. The key comes from ``FLOTILLA_MASTER_KEY`` when that is set (so an
operator can keep it in a secret manager or a systemd credential, away from the
disk the vault lives on), and otherwise from ``$FLOTILLA_HOME/master.key``,
created on first use readable by its owner alone. A key never shows itself: its
repr carries only a fingerprint, a one-way digest that lets the vault (and a
person) tell two keys apart without revealing either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from flotilla.errors import SecretsError

KEY_BYTES = 32
KEY_FILE_NAME = "master.key"
ENV_VAR = "FLOTILLA_MASTER_KEY"
ENV_SOURCE = "env"
MAKE_KEY_COMMAND = 'python3 -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'
_FINGERPRINT_LABEL = b"flotilla-key-check"
_KEY_FORMAT = "the base64 (standard or URL-safe) encoding of exactly 32 bytes, or 64 hex digits"
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class MasterKey:
    """32 secret bytes; compares in constant time and never prints them."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            raise SecretsError(f"a master key is exactly {KEY_BYTES} bytes")
        self._material = material

    @property
    def material(self) -> bytes:
        """The raw key, for the cipher only."""
        return self._material

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming this key: HMAC-SHA256(key, a fixed label), cut short."""
        return hmac.new(self._material, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]

    def to_base64(self) -> str:
        return base64.b64encode(self._material).decode("ascii")

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError("a MasterKey cannot be pickled: it would leave the daemon in plaintext")


def generate_key() -> MasterKey:
    return MasterKey(os.urandom(KEY_BYTES))


def decode_key_text(text: str) -> MasterKey | None:
    """A key from 64 hex digits or base64 (standard or URL-safe) of 32 bytes; None otherwise."""
    text = text.strip()
    if _HEX.fullmatch(text):
        return MasterKey(bytes.fromhex(text))
    for pattern, decode in ((_BASE64, base64.standard_b64decode), (_BASE64_URL, base64.urlsafe_b64decode)):
        if pattern.fullmatch(text):
            try:
                raw = decode(text + "=" * (-len(text) % 4))
            except (binascii.Error, ValueError):
                return None
            return MasterKey(raw) if len(raw) == KEY_BYTES else None
    return None


def load_master_key(*, home: Path, environ: Mapping[str, str]) -> tuple[MasterKey, str]:
    """The daemon's key and where it came from: ``"env"`` or the key file's path.

    ``FLOTILLA_MASTER_KEY`` wins whenever it is set (an empty or malformed value
    is an error, never a silent fall-back to the file). Otherwise the key file is
    read, or created with a new random key if there is none.
    """
    if ENV_VAR in environ:
        return _key_from_env(environ[ENV_VAR]), ENV_SOURCE
    path = Path(home) / KEY_FILE_NAME
    try:
        return _create_key_file(path), str(path)
    except FileExistsError:
        return _read_key_file(path), str(path)


def write_key_file(path: Path, key: MasterKey) -> None:
    """Replace ``path`` with ``key`` atomically: a 0600 temp file, fsync, rename, fsync the dir."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write_new_file(tmp, key)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise SecretsError(f"cannot write the master key file {path}: {exc.strerror}") from exc
    _fsync_dir(path.parent)


def _key_from_env(text: str) -> MasterKey:
    key = decode_key_text(text)
    if key is None:
        size = len(text.strip())
        what = f"is not a valid master key ({size} characters)" if size else "is empty"
        raise SecretsError(f"{ENV_VAR} {what}: expected {_KEY_FORMAT}; make one with: {MAKE_KEY_COMMAND}")
    return key


def _create_key_file(path: Path) -> MasterKey:
    """A new key in a new file; FileExistsError if there already is one (never replaced)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SecretsError(f"cannot create {path.parent} for the master key: {exc.strerror}") from exc
    key = generate_key()
    try:
        _write_new_file(path, key)
    except FileExistsError:
        raise
    except OSError as exc:
        raise SecretsError(
            f"cannot create the master key file {path}: {exc.strerror}; "
            f"set FLOTILLA_HOME to a directory you own, or set {ENV_VAR}"
        ) from exc
    _fsync_dir(path.parent)
    return key


def _write_new_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` (0600 from the first instant, never an existing file) holding ``key``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, key.to_base64().encode("ascii") + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def _read_key_file(path: Path) -> MasterKey:
    data = read_private_file(path, what="the master key file")
    key = decode_key_text(data.decode("ascii", errors="replace"))
    if key is None:
        raise SecretsError(
            f"the master key file {path} does not hold a valid key (expected {_KEY_FORMAT}, "
            f"and a newline); restore it from your backup, or set {ENV_VAR}"
        )
    return key


def read_private_file(path: Path, *, what: str, limit: int = 4096) -> bytes:
    """The first ``limit`` bytes of a credential file (``what``: "the master key file"), refused
    unless it is a regular file owned by this process's user and closed to every other user."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretsError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        _check_private(path, os.fstat(fd), what=what)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _check_private(path: Path, st: os.stat_result, *, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SecretsError(f"{what} {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise SecretsError(
            f"{what} {path} belongs to uid {st.st_uid}, not to the daemon's user (uid {os.geteuid()}), "
            f"who could then change it: run chown {os.geteuid()} {path}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"{what} {path} is open to other users (mode {mode:04o}); "
            f"it must be readable by its owner only: run chmod 600 {path}"
        )


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``: os.write may write less than it was given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
