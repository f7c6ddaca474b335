"""Connections to a backend (gateway and collection alike): small pools, filled one after the other."""

from __future__ import annotations

import asyncio

from entrorouter.backends import ClientShards
from entrorouter.testing.fake_backend import FakeBackend


def test_calls_fill_the_first_pool_with_a_free_connection() -> None:
    async def main() -> None:
        async with ClientShards(20, shard_size=8) as shards:
            assert shards.capacity == [8, 8, 4]
            taken = [shards.take() for _ in range(20)]
            assert taken == [0] * 8 + [1] * 8 + [2] * 4
            shards.give_back(1)
            assert shards.take() == 1  # the first pool with a free connection
            shards.give_back(0)
            shards.give_back(1)
            assert shards.take() == 0
            assert shards.take() == 1
            # All full: the least busy pool takes it (httpcore queues it there).
            shards.give_back(2)
            shards.give_back(2)
            assert shards.take() == 2

    asyncio.run(main())


def test_no_pool_opens_more_connections_than_its_share_under_a_burst() -> None:
    async def main(url: str) -> list[int]:
        async with ClientShards(64, shard_size=8) as shards:

            async def one(i: int) -> int:
                body = {"model": "m", "messages": [{"role": "user", "content": f"what is {i} + 1?"}]}
                async with shards.connection() as client:
                    return (await client.post(url, json=body)).status_code

            statuses = await asyncio.gather(*(one(i) for i in range(64)))
            assert statuses == [200] * 64
            assert shards.busy == [0] * 8
            return [len(shards.client(i)._transport._pool.connections) for i in range(8)]  # type: ignore[attr-defined]

    with FakeBackend({"m": 0.5}) as fake:
        opened = asyncio.run(main(f"{fake.base_url}/chat/completions"))
    assert max(opened) <= 8
    assert sum(opened) > 8, "the burst should have needed more than one pool"
