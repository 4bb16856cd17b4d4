"""tests.settings plus one source per built-in scheme, each routing its events to ``record``:
what tests/test_testing.py and the ``send_test_webhook --source`` tests deliver to, in process
(``override_settings(WEBHOOKS=WEBHOOKS)``) and on a real server (``DJANGO_SETTINGS_MODULE``).

A module of its own, so that the shared test settings keep the sources other tests count.
Each source has a secret of its own, in the form its provider hands out: a token scheme's
secret is never an HMAC key elsewhere (check E006).
"""

from __future__ import annotations

import base64

from tests.settings import *  # noqa: F403
from tests.settings import WEBHOOKS as BASE_WEBHOOKS

RECORD = {"*": "record"}
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32byt").decode()
GITLAB_SIGNING_TOKEN = "whsec_" + base64.b64encode(b"gitlab-signing-token-test-32byte").decode()

PROVIDER_SOURCES = {
    "standard": {"SCHEME": "standard", "SECRETS": [STANDARD_SECRET], "ROUTES": RECORD},
    "stripe": {
        "SCHEME": "stripe",
        "SECRETS": ["whsec_stripe-test-secret-0123456789abcdef"],
        "ROUTES": RECORD,
    },
    "slack": {
        "SCHEME": "slack",
        "SECRETS": ["slack-signing-secret-0123456789abcdef"],
        "ROUTES": RECORD,
    },
    "shopify": {
        "SCHEME": "shopify",
        "SECRETS": ["shpss_shopify-client-secret-0123456789"],
        "ROUTES": RECORD,
    },
    "whatsapp": {
        "SCHEME": "whatsapp",
        "SECRETS": ["meta-app-secret-0123456789abcdefghij"],
        "ROUTES": RECORD,
    },
    "telegram": {
        "SCHEME": "telegram",
        "SECRETS": ["telegram-secret-token_0123456789abcdef"],
        "ROUTES": RECORD,
    },
    "twilio": {
        "SCHEME": "twilio",
        "SECRETS": ["twilio-auth-token-0123456789abcdefghij"],
        "ROUTES": RECORD,
    },
    "gitlab": {
        "SCHEME": "gitlab",
        "SECRETS": ["gitlab-secret-token-0123456789abcdefghij"],
        "ROUTES": RECORD,
    },
    # GitLab's newer signing token: Standard Webhooks headers instead of X-Gitlab-Token.
    "gitlab_signed": {"SCHEME": "gitlab", "SECRETS": [GITLAB_SIGNING_TOKEN], "ROUTES": RECORD},
}

WEBHOOKS = {
    **BASE_WEBHOOKS,
    "SOURCES": {**BASE_WEBHOOKS["SOURCES"], **PROVIDER_SOURCES},
}
#: One source per built-in scheme (``github`` and ``generic`` come from tests.settings).
SOURCE_OF_SCHEME = {
    "generic": "generic",
    "github": "github",
    **{name: name for name in PROVIDER_SOURCES if name != "gitlab_signed"},
}
