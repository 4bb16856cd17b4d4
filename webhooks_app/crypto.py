"""Secrets at rest: a database source's secrets are Fernet tokens (``cryptography``).

Keys come from ``WEBHOOKS["ENCRYPTION_KEYS"]``, a list of strings: the first encrypts, every
one decrypts (``MultiFernet``). So a key is rotated by putting the new one first, running
``manage.py reencrypt_webhook_secrets`` (which moves every secret to it), then dropping the old
one. Each string is stretched into a Fernet key with HKDF-SHA256, so any random string of
:data:`MIN_KEY_LENGTH` characters or more is a key. Left empty, the keys are derived the same
way from ``SECRET_KEY`` and then ``SECRET_KEY_FALLBACKS``: rotating ``SECRET_KEY`` as Django
documents it keeps the secrets readable, and the command moves them to the new key.

A fingerprint tells secrets apart in the admin and the logs: the first 8 hex digits of an
HMAC-SHA256 of the value under a key of its own, derived from the current encryption key. Not a
hash prefix of the value: with the database alone, a guess at a low-entropy secret (a GitLab
token someone typed) could be tested against that.

Every function that holds a plaintext hides its frames' variables from Django's error reports
(``sensitive_variables``, which also covers the ``cryptography`` frames it calls).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.views.decorators.debug import sensitive_variables

from webhooks_app.conf import webhook_settings

#: The shortest ``ENCRYPTION_KEYS`` entry: 32 random characters are well over 128 bits.
MIN_KEY_LENGTH = 32
FINGERPRINT_LENGTH = 8
_ENCRYPTION_INFO = b"webhooks_app source secrets: Fernet key"
_FINGERPRINT_INFO = b"webhooks_app source secrets: fingerprint key"
_SALT = b"webhooks_app"
#: Schemes whose secret is a Standard Webhooks ``whsec_`` key when this app generates one.
_WHSEC_SCHEMES = frozenset({"standard"})


class Undecryptable(ValueError):
    """A stored secret that none of the configured keys decrypts."""


def keys_problem() -> str | None:
    """What is wrong with ``WEBHOOKS["ENCRYPTION_KEYS"]`` (check E031), or None."""
    keys = webhook_settings.ENCRYPTION_KEYS
    if not isinstance(keys, list | tuple):
        return "is not a list"
    for index, key in enumerate(keys):
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            return f"[{index}] is not a string of at least {MIN_KEY_LENGTH} characters"
    return None


def _key_material() -> list[str]:
    """The configured keys, else ``SECRET_KEY`` and its fallbacks; current first."""
    if problem := keys_problem():
        raise ImproperlyConfigured(f"WEBHOOKS['ENCRYPTION_KEYS'] {problem} (check E031).")
    keys = list(webhook_settings.ENCRYPTION_KEYS)
    return keys or [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _derive(material: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(
        material.encode()
    )


@cache
def _fernet() -> MultiFernet:
    return MultiFernet(
        [Fernet(base64.urlsafe_b64encode(_derive(k, _ENCRYPTION_INFO))) for k in _key_material()]
    )


@cache
def _fingerprint_key() -> bytes:
    return _derive(_key_material()[0], _FINGERPRINT_INFO)


@sensitive_variables()
def encrypt(value: str) -> str:
    """``value`` as a Fernet token under the current key (ASCII, about 4/3 of it plus 76 bytes)."""
    return _fernet().encrypt(value.encode()).decode("ascii")


@sensitive_variables()
def decrypt(token: str) -> str:
    """The plaintext of ``token``; :class:`Undecryptable` when no configured key opens it."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise Undecryptable("No key in WEBHOOKS['ENCRYPTION_KEYS'] decrypts it.") from None
    except ImproperlyConfigured as exc:  # unusable keys decrypt nothing (check E031)
        raise Undecryptable(str(exc)) from None


@sensitive_variables()
def reencrypt(token: str) -> str:
    """``token`` encrypted under the current key (``MultiFernet.rotate``); Undecryptable when
    no configured key opens it."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise Undecryptable("No key in WEBHOOKS['ENCRYPTION_KEYS'] decrypts it.") from None


@sensitive_variables()
def fingerprint(value: str) -> str:
    """A short, non-reversible label for ``value`` (module docstring)."""
    digest = hmac.new(_fingerprint_key(), value.encode(), hashlib.sha256).hexdigest()
    return digest[:FINGERPRINT_LENGTH]


def new_secret(scheme: str) -> str:
    """A fresh random secret for a source of ``scheme``: 32 random bytes, as ``whsec_<base64>``
    for Standard Webhooks (what its libraries expect), URL-safe base64 otherwise (which every
    provider that lets the receiver choose accepts, Telegram's restricted alphabet included)."""
    if scheme in _WHSEC_SCHEMES:
        return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()
    return random.token_urlsafe(32)


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs: Any) -> None:
    if setting in {"WEBHOOKS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"}:
        _fernet.cache_clear()
        _fingerprint_key.cache_clear()
