"""Azure adapter of apix-core: Storage Queue and Service Bus transports.

Importing this package loads no Azure SDK: each transport imports its SDK when it is built, so
listing or registering transports stays cheap on a cold start. The SDKs come with the
``[azure]`` extra.
"""
