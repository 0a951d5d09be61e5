"""A free loopback port for tests that start a server on a port they must know in advance
(a Redis server, a JAX coordinator, a metrics endpoint)."""

import socket


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick): bound on 127.0.0.1, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
