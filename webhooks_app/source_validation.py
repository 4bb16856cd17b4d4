"""What a database source (``WebhookSource``) and its secrets may hold.

Every rule names what it refuses: the field (``name``, ``scheme``, ``routes``, ``options``,
``value``…), and inside ``options`` the key. The model runs them on every save, so a source
that would fail deliveries or crash the loader is never stored; the admin's forms show the same
messages beside the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from webhooks_app import ordering, registry
from webhooks_app.conf import SOURCE_OPTIONS
from webhooks_app.schemes import get_scheme, scheme_names

#: The app's own first path segments (``webhooks_app.urls``): a source of that name would clash
#: with the app's own pages. A test keeps this in step with the URLconf, which is not imported
#: here: it imports the views, and they the models, which validate with this module.
RESERVED_NAMES = frozenset({"api", "health", "metrics"})
#: The shortest secret a database source takes (check W004 warns below 24 bytes of key too).
MIN_SECRET_LENGTH = 24
MAX_KEY_LENGTH = 255
#: Where a settings source would put what these fields hold.
_NOT_OPTIONS = {
    "SCHEME": "the scheme field",
    "SECRETS": "add_secret() (secrets are stored encrypted, apart from the options)",
    "ROUTES": "the routes field",
}


def validate_source_name(name: str) -> None:
    if name.lower() in RESERVED_NAMES:
        raise ValidationError(
            f"{name!r} is one of the app's own URLs (/webhooks/{name.lower()}/…): choose "
            "another name.",
            code="reserved",
        )


def validate_scheme(scheme: str) -> None:
    known = scheme_names()
    if scheme not in known:
        raise ValidationError(
            f"{scheme!r} is not a signature scheme. Use one of: {', '.join(sorted(known))}.",
            code="unknown_scheme",
        )


def routes_problems(routes: Any) -> list[str]:
    """What is wrong with ``routes`` (event type → registered workflow name), or nothing."""
    if not isinstance(routes, Mapping):
        return [
            'Routes are an object of event type to workflow name, e.g. {"push": "deploy", '
            '"*": "log"} ("*" for every other event type).'
        ]
    problems = []
    for event, workflow in routes.items():
        if not isinstance(event, str) or not 0 < len(event) <= MAX_KEY_LENGTH:
            problems.append(f"{event!r}: an event type is a string of 1 to 255 characters.")
        elif not isinstance(workflow, str) or not workflow:
            problems.append(f"{event!r}: the workflow is a name, not {workflow!r}.")
        elif not registry.is_registered(workflow):
            problems.append(
                f"{event!r} routes to {workflow!r}, which is not a registered workflow."
            )
    return problems


def options_problems(options: Any, scheme: str) -> list[str]:
    """What is wrong with ``options`` (the keys of ``conf.SOURCE_OPTIONS``) for a source of
    ``scheme``, each naming its key, or nothing."""
    if not isinstance(options, Mapping):
        return ['Options are an object, e.g. {"ORDER_KEY": "data.object.customer"}.']
    problems = []
    for key, value in options.items():
        if key in _NOT_OPTIONS:
            problems.append(f"{key}: not an option of a database source; use {_NOT_OPTIONS[key]}.")
        elif key not in SOURCE_OPTIONS:
            problems.append(
                f"{key!r} is not a source option. The options are: {', '.join(SOURCE_OPTIONS)}."
            )
        elif problem := _option_problem(key, value, scheme):
            problems.append(f"{key}: {problem}")
    return problems


def _option_problem(key: str, value: Any, scheme: str) -> str | None:
    if SOURCE_OPTIONS[key] is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            unit = "seconds" if key == "TIMESTAMP_TOLERANCE" else "bytes"
            return f"a whole number of {unit}, at least 1 (not {value!r})."
        return None
    if not isinstance(value, str) or not value:
        return f"a non-empty string (not {value!r})."
    if key == "PUBLIC_URL":
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError:
            return f"an absolute http:// or https:// URL, as the sender signs it (not {value!r})."
    elif key == "ORDER_KEY":
        if len(value) > MAX_KEY_LENGTH:
            return f"at most {MAX_KEY_LENGTH} characters."
        if ":" in value:
            try:
                ordering.load_function(value)
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                return (
                    f"{value!r} cannot be loaded ({exc}): give 'module.path:function' or a "
                    "dotted path into the payload such as 'data.object.customer'."
                )
    elif key == "VERIFY_TOKEN":
        try:
            handshake = get_scheme(scheme).has_handshake
        except KeyError:  # the scheme field reports it
            return None
        if not handshake:
            return f"the {scheme} scheme has no GET handshake that would use it."
    return None


@sensitive_variables()
def validate_secret(value: Any, not_after: datetime | None, label: str) -> None:
    """A secret for :meth:`WebhookSource.add_secret`; ValidationError naming ``value``,
    ``not_after`` or ``label``. The messages never quote the value."""
    errors: dict[str, str] = {}
    if not isinstance(value, str) or not value:
        errors["value"] = "A secret cannot be empty."
    elif value != value.strip():
        errors["value"] = (
            "The secret starts or ends with a space or line break (a copy-paste slip?): "
            "remove it, a sender would not sign with it."
        )
    elif not value.isprintable():
        errors["value"] = "The secret holds a control character: paste it again."
    elif len(value.encode("utf-8", "replace")) < MIN_SECRET_LENGTH:
        errors["value"] = (
            f"The secret is shorter than {MIN_SECRET_LENGTH} bytes: use the provider's secret, "
            "or a random one such as python -c "
            '"import secrets; print(secrets.token_urlsafe(32))".'
        )
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            errors["value"] = "The secret is not valid text (UTF-8): paste it again."
    if not_after is not None:
        if timezone.is_naive(not_after):
            errors["not_after"] = "Give the time with its time zone."
        elif not_after <= timezone.now():
            errors["not_after"] = "This time has passed: the secret would never verify."
    if not isinstance(label, str) or len(label) > 100:
        errors["label"] = "A label is a string of at most 100 characters."
    if errors:
        raise ValidationError(errors)
