"""A TCP proxy that holds every byte for a fixed time each way: latency between hosts
where the kernel has no netem.

It stands on a host in front of the node's ports: it listens on the host's address and
passes each connection to the node bound on 127.0.0.1, so that everything arriving from
another host, peers and clients alike, arrives `delay` later, in order.

    python -m tests.delay_proxy --delay 0.01 10.213.0.3:7200=127.0.0.1:7200 ...
"""

import argparse
import asyncio
import time

from mesh.client.connection import parse_servers

CHUNK_BYTES = 64 * 1024
# Chunks read but not yet due, per direction of a connection: a full queue stops the
# reading, so a slow receiver slows the sender down as a real link would.
CHUNKS_IN_FLIGHT_MAX = 256


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(CHUNKS_IN_FLIGHT_MAX)

    async def read() -> None:
        while chunk := await reader.read(CHUNK_BYTES):
            await due.put((time.monotonic() + delay_s, chunk))
        await due.put((time.monotonic() + delay_s, b""))

    async def deliver() -> None:
        while True:
            at, chunk = await due.get()
            if (wait := at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if not chunk:
                writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    async with asyncio.TaskGroup() as both:
        both.create_task(read())
        both.create_task(deliver())


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()  # nothing listens behind: as if the port were closed
            return
        try:
            async with asyncio.TaskGroup() as directions:
                directions.create_task(_pump(reader, upstream_writer, delay_s))
                directions.create_task(_pump(upstream_reader, writer, delay_s))
        except* OSError:
            pass  # one side went away (reset, or a node killed): both are closed below
        finally:
            writer.close()
            upstream_writer.close()

    server = await asyncio.start_server(connect, *listen)
    async with server:
        await server.serve_forever()


async def _serve_all(routes: list[tuple[tuple[str, int], tuple[str, int]]], delay_s: float) -> None:
    await asyncio.gather(*(_serve(listen, target, delay_s) for listen, target in routes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a TCP proxy that delays each way")
    parser.add_argument("--delay", type=float, required=True, help="seconds one way")
    parser.add_argument("routes", nargs="+", metavar="LISTEN=TARGET", help="HOST:PORT=HOST:PORT")
    args = parser.parse_args(argv)
    routes = []
    for route in args.routes:
        listen, _, target = route.partition("=")
        routes.append((parse_servers(listen)[0], parse_servers(target)[0]))
    asyncio.run(_serve_all(routes, args.delay))


if __name__ == "__main__":
    main()
