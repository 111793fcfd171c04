"""Free local ports for servers a test starts on fixed addresses (the benchmarks' helpers, one copy)."""

from __future__ import annotations

from bench.common import free_port, free_ports

__all__ = ["free_port", "free_ports"]
