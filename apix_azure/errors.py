"""Typed errors of the Azure adapter (all :class:`~apix_core.errors.ApixError`)."""

from __future__ import annotations

from apix_core.errors import ConfigurationError, UnsupportedOperationError


class AzureConnectionError(ConfigurationError):
    """No usable connection string: the app setting is missing, blank or malformed, or the
    account rejected the credentials."""

    code = "AZURE_CONNECTION_ERROR"


class InvalidQueueNameError(ConfigurationError):
    """A queue name that the Azure service cannot hold (and apix does not map)."""

    code = "INVALID_QUEUE_NAME"


__all__ = ["AzureConnectionError", "InvalidQueueNameError", "UnsupportedOperationError"]
