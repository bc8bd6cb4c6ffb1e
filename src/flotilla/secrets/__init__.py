"""Secrets: the encrypted vault and the master key that opens it.

Sensitive configuration (passwords, access keys, encryption keys) is kept here,
sealed with AES-256-GCM under a master key only the daemon holds, and decrypted
only to be injected into containers. See ``vault`` and ``keys``.
"""

from flotilla.secrets.keys import (
    ENV_VAR,
    KEY_FILE_NAME,
    MasterKey,
    decode_key_text,
    generate_key,
    load_master_key,
    write_key_file,
)
from flotilla.secrets.vault import (
    KEEP_VERSIONS,
    MAX_VALUE_BYTES,
    SecretInfo,
    SecretNotFoundError,
    SecretsError,
    TamperedError,
    Vault,
    WrongKeyError,
)

__all__ = [
    "ENV_VAR",
    "KEEP_VERSIONS",
    "KEY_FILE_NAME",
    "MAX_VALUE_BYTES",
    "MasterKey",
    "SecretInfo",
    "SecretNotFoundError",
    "SecretsError",
    "TamperedError",
    "Vault",
    "WrongKeyError",
    "decode_key_text",
    "generate_key",
    "load_master_key",
    "write_key_file",
]
