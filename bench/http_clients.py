"""The client side's cost per request: httpx's AsyncClient against aiohttp, polling `ascrm serve` as emulate does.

Both keep 64 connections alive and send the same GET /CallEvent/{CallID} with Basic auth, from a number of
concurrent tasks, on uvloop. Printed per client and concurrency: requests/s and the client's CPU time
per request (the emulator runs beside the server on the same cores, so this is what it takes from it).

Run: python bench/http_clients.py [--requests 6000] [--concurrency 10,500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop
from emulate_capacity import start_server

CONNECTIONS = 64


async def _load(one: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> tuple[float, float]:
    gate = asyncio.Semaphore(concurrency)

    async def task() -> None:
        async with gate:
            await one()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(task() for _ in range(requests)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return requests / elapsed, cpu / requests * 1e6


async def with_httpx(url: str, headers: dict[str, str], requests: int, concurrency: int) -> tuple[float, float]:
    """requests/s and client CPU µs per request with httpx.AsyncClient."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(headers=headers, limits=limits) as client:

        async def one() -> None:
            response = await client.get(url)
            assert response.status_code == 200

        return await _load(one, requests, concurrency)


async def with_aiohttp(url: str, headers: dict[str, str], requests: int, concurrency: int) -> tuple[float, float]:
    """requests/s and client CPU µs per request with aiohttp.ClientSession."""
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as client:

        async def one() -> None:
            async with client.get(url) as response:
                await response.read()
                assert response.status == 200

        return await _load(one, requests, concurrency)


def main() -> int:
    """Start a server, measure both clients at each concurrency, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", default="10,500")
    args = parser.parse_args()
    password = secrets.token_urlsafe(12)
    headers = {"Authorization": "Basic " + base64.b64encode(f"autosecretary:{password}".encode()).decode()}
    print("client     concurrency   req/s   client CPU µs/request")
    with tempfile.TemporaryDirectory(prefix="ascrm-clients-") as tmp:
        server, base = start_server(Path(tmp), password)
        try:
            for concurrency in (int(n) for n in args.concurrency.split(",")):
                for name, measure in (("httpx", with_httpx), ("aiohttp", with_aiohttp)):
                    rate, cpu = uvloop.run(measure(f"{base}/CallEvent/4711", headers, args.requests, concurrency))
                    print(f"{name:<10} {concurrency:>11} {rate:>7.0f} {cpu:>12.0f}", flush=True)
        finally:
            server.terminate()
            server.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
