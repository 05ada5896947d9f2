"""Azure adapter of apix-core: Storage Queue and Service Bus transports.

Importing this package loads no Azure SDK: each transport imports its SDK when it is built, so
listing or registering transports stays cheap on a cold start. The SDKs come with the
``[azure]`` extra.
"""

# The module imports no Azure SDK (azure.functions loads when function_app() is called); the
# function, bound after the submodule, shadows the module as the package attribute.
from apix_azure.function_app import function_app

__all__ = ["function_app"]
