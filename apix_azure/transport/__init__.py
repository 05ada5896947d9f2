"""Azure queue transports, importable without the Azure SDKs (they load on first use).

- :mod:`apix_azure.transport.storage_queue` — Azure Storage Queues (``azure-queue://``).
- :mod:`apix_azure.transport.servicebus` — Service Bus, producer only (``servicebus://``).
"""
