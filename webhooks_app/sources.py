"""Which sources exist: ``WEBHOOKS["SOURCES"]`` first, then the enabled ``WebhookSource`` rows.

:func:`get_source` answers for every caller (the view, the ASGI body limit, the API, the
commands, ``testing``); both kinds come out as the same :class:`~webhooks_app.conf.SourceConfig`,
so nothing downstream tells them apart. A settings source wins over a database source of the
same name (check W010); a disabled or deleted database source is unknown, as a name nobody
configured is (404 ``unknown_source``).

Database sources are cached per process. Every save or delete of a source or a secret sets a
new random stamp in the one ``SourceVersion`` row (:func:`changed`, run by the signals below);
a process reads that stamp at most once per :data:`REFRESH_SECONDS`, and only when it is asked
for a database source, and reloads every source when the stamp differs. So the steady state
costs no query per delivery, and a change reaches every process and node within
``REFRESH_SECONDS`` of its commit (plus the time to the next request). Deliveries to settings
sources never look at any of it.

Secrets are decrypted when the sources are loaded. A ciphertext that no key in
``ENCRYPTION_KEYS`` opens is skipped (logged once per process, without the value; check E030
names its source); a source left without a usable secret fails closed (503 ``not_configured``).
``not_after`` is judged at each delivery from the clock, never at load time: a cached source
does not keep an expired secret alive.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.db import DatabaseError
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.views.decorators.debug import sensitive_variables

from webhooks_app import crypto, sql
from webhooks_app.conf import SourceConfig, webhook_settings
from webhooks_app.logutil import printable
from webhooks_app.models import SourceVersion, WebhookSource, WebhookSourceSecret

logger = logging.getLogger("webhooks_app")

#: How long a process trusts its copy of the database sources before reading the stamp again.
REFRESH_SECONDS = 2.0
_STAMP_ROW = 1


@dataclass
class _Stored:
    """A database source as loaded: every decrypted secret with its end (epoch seconds, or
    None), and the configuration with the secrets still valid, good until ``until``."""

    config: SourceConfig
    secrets: tuple[tuple[str, float | None], ...] = field(repr=False)
    until: float = -math.inf

    def at(self, now: float) -> SourceConfig:
        """The configuration with the secrets valid at ``now``: rebuilt only when a secret
        has ended since the last time, so a delivery pays one comparison."""
        if now > self.until:
            self.config = replace(
                self.config,
                secrets=tuple(value for value, end in self.secrets if end is None or now <= end),
            )
            ends = (end for _, end in self.secrets if end is not None and now <= end)
            self.until = min(ends, default=math.inf)
        return self.config


@dataclass(frozen=True)
class _Snapshot:
    stamp: str | None
    sources: dict[str, _Stored]


_snapshot: _Snapshot | None = None
_checked_at = -math.inf
#: Secrets (by primary key) this process has logged as undecryptable: one line each.
_logged_undecryptable: set[int] = set()


def get_source(name: str) -> SourceConfig | None:
    """The source served at ``/webhooks/<name>/`` now, or None. ``DatabaseError`` only when the
    database sources were never loaded in this process and cannot be now."""
    config = webhook_settings.source(name)
    if config is not None:
        return config
    return _at_now(_stored(), name)


async def aget_source(name: str) -> SourceConfig | None:
    """:func:`get_source` for async code: the database is read (in a thread) only when the
    stamp is due."""
    config = webhook_settings.source(name)
    if config is not None:
        return config
    snapshot = _snapshot
    if snapshot is not None and _fresh():
        return _at_now(snapshot.sources, name)
    return _at_now(await sync_to_async(_stored)(), name)


def all_sources() -> dict[str, SourceConfig]:
    """Every source served: the settings ones, then the enabled database ones that no settings
    source shadows, by name."""
    found = dict(webhook_settings.sources)
    now = time.time()
    for name, stored in sorted(_stored().items()):
        found.setdefault(name, stored.at(now))
    return found


def changed() -> None:
    """Tell every process that a database source or secret changed: the models' saves and
    deletes call this (signals below); call it yourself after a ``QuerySet.update()`` or
    ``bulk_create()`` of them. Inside a transaction, the others see it at the commit."""
    global _checked_at
    SourceVersion.objects.update_or_create(pk=_STAMP_ROW, defaults={"stamp": uuid.uuid4().hex})
    _checked_at = -math.inf  # this process reads its own writes at once


def forget() -> None:
    """Drop this process's copy (settings changed: perhaps the keys; tests)."""
    global _snapshot, _checked_at
    _snapshot, _checked_at = None, -math.inf
    _logged_undecryptable.clear()


def _at_now(stored: dict[str, _Stored], name: str) -> SourceConfig | None:
    entry = stored.get(name)
    return None if entry is None else entry.at(time.time())


def _fresh() -> bool:
    return time.monotonic() - _checked_at < REFRESH_SECONDS


def _stored() -> dict[str, _Stored]:
    """The enabled database sources, reloaded when the stamp has changed. A database that
    fails meanwhile leaves the last copy in use (the delivery's own write will say 503)."""
    global _snapshot, _checked_at
    snapshot = _snapshot
    if snapshot is not None and _fresh():
        return snapshot.sources
    checked = time.monotonic()
    try:
        stamp = sql.retrying_lost_connection(_read_stamp)
        if snapshot is None or stamp != snapshot.stamp:
            snapshot = _load(stamp)
    except DatabaseError:
        if snapshot is None:
            raise
    _snapshot, _checked_at = snapshot, checked
    return snapshot.sources


def _read_stamp() -> str | None:
    return SourceVersion.objects.filter(pk=_STAMP_ROW).values_list("stamp", flat=True).first()


@sensitive_variables()
def _load(stamp: str | None) -> _Snapshot:
    """Every enabled database source with its readable secrets, newest first (the one
    ``testing.signed_request`` signs with), in two queries."""
    loaded: dict[str, _Stored] = {}
    for row in WebhookSource.objects.filter(enabled=True).prefetch_related("secrets"):
        secrets = []
        for secret in row.secrets.all():
            try:
                value = crypto.decrypt(secret.ciphertext)
            except crypto.Undecryptable:
                _log_undecryptable(row, secret)
                continue
            secrets.append((value, secret.not_after.timestamp() if secret.not_after else None))
        try:
            config = webhook_settings.build_source(
                row.name,
                row.scheme,
                {**row.options, "ROUTES": row.routes},
                secrets=(),
                secret_origin=f"the secrets of the database source {row.name!r}",
                stored=True,
            )
        except (TypeError, ValueError):  # a row written around save(): QuerySet.update()
            logger.exception(
                "Webhook source %s is not served: invalid options.", printable(row.name)
            )
            continue
        loaded[row.name] = _Stored(config, tuple(secrets))
    return _Snapshot(stamp, loaded)


def _log_undecryptable(source: WebhookSource, secret: WebhookSourceSecret) -> None:
    if secret.pk in _logged_undecryptable:
        return
    _logged_undecryptable.add(secret.pk)
    logger.error(
        "Secret %s of webhook source %s cannot be decrypted with any key in "
        "WEBHOOKS['ENCRYPTION_KEYS']: it is skipped (check webhooks_app.E030).",
        printable(str(secret)),
        printable(source.name),
    )


@receiver([post_save, post_delete], sender=WebhookSource)
@receiver([post_save, post_delete], sender=WebhookSourceSecret)
def _on_write(**kwargs: Any) -> None:
    changed()


@receiver(setting_changed)
def _forget_on_change(*, setting: str, **kwargs: Any) -> None:
    # The defaults (TIMESTAMP_TOLERANCE…) and the keys the secrets were decrypted with.
    if setting in {"WEBHOOKS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"}:
        forget()
