"""The HTTP API's routers, one per area; each module's router(config) builds its routes for a config.

The modules do without `from __future__ import annotations`: FastAPI evaluates the route signatures, and
some of their types (K, Offset, Params) exist only inside router().
"""
