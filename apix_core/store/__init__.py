"""The metadata store. SQLAlchemy's asyncio engine loads without its ORM (see lazy_asyncio)."""

from apix_core.store.lazy_asyncio import install as _install_lazy_asyncio

_install_lazy_asyncio()
