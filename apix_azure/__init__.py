"""Azure adapter of apix-core: the Functions app (``function_app``), Storage Queue and Service
Bus transports, ``apix deploy azure``.

Importing this package loads nothing heavy: ``function_app`` (``apix_azure.functions``) is
imported on first use, and each transport imports its SDK when it is built, so listing CLI
plugins or registering transports stays cheap. The SDKs come with the ``[azure]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apix_azure.functions import function_app


def __getattr__(name: str) -> Any:
    if name == "function_app":
        from apix_azure.functions import function_app

        globals()[name] = function_app
        return function_app
    raise AttributeError(f"module 'apix_azure' has no attribute {name!r}")


__all__ = ["function_app"]
