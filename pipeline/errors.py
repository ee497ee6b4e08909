"""One root exception, so callers can catch everything xp raises on purpose."""

from __future__ import annotations


class XpError(Exception):
    """Root of xp's own errors; the CLI prints these without a traceback."""


class BrokerStartError(XpError):
    """The embedded broker did not become ready; the message points at its log."""


class ConfigurationError(XpError):
    """A setting or argument makes the requested run impossible."""


class WorkerStuck(XpError):
    """The watchdog found the worker stuck: it cannot stop cleanly, so xp exits at once."""
