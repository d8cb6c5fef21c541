"""A free TCP port for a test server, and whether one accepts connections yet."""

import asyncio
import socket


def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((bind, 0))
        return s.getsockname()[1]


async def accepts(port: int) -> bool:
    """Does a server accept connections on this loopback port (yet)?"""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
