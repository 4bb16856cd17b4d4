"""webhooks_app: receive webhooks safely and run a named workflow for each, in the background.

The public API is :func:`workflow`; see the README for settings and URLs.
"""

from webhooks_app.registry import workflow

__all__ = ["workflow"]
