"""Hundreds of parallel requests: no errors, no crossed responses, routing micro-batched."""

from __future__ import annotations

import asyncio
import random

import openai

from .conftest import CLIENT_KEY, RunningGateway, chat_body, gateway_config, wait_for

N_REQUESTS = 300
TOPICS = ["integral of x^2", "a Python decorator", "the fall of Rome", "contract law", "a sonnet", "insulin dosing"]


def test_parallel_requests_each_get_their_own_answer(shared_gateway, fake) -> None:
    batches_before = shared_gateway.metric("entrorouter_routing_batch_size_count", worker="0")
    texts_before = shared_gateway.metric("entrorouter_routing_batch_size_sum", worker="0")

    async def one(client: openai.AsyncOpenAI, i: int) -> None:
        # The nonce makes every prompt unique; the fake echoes "[model] prompt", so an answer
        # delivered to the wrong request, or attributed to the wrong model, fails the check.
        prompt = f"request {i} nonce {random.getrandbits(64):016x}: explain {TOPICS[i % len(TOPICS)]}"
        model = random.choice(["entrorouter", "entrorouter:0.1", "entrorouter:3", "small-8b"])
        messages = [{"role": "user", "content": prompt}]
        if i % 2:
            raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages)
            completion = raw.parse()
            answered = raw.headers["x-entrorouter-model"]
            assert completion.model == answered
            assert completion.choices[0].message.content == f"[{answered}] {prompt}"
        else:
            stream = await client.chat.completions.create(model=model, messages=messages, stream=True)
            chunks = [chunk async for chunk in stream]
            answered = chunks[0].model
            assert {c.model for c in chunks} == {answered}
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"[{answered}] {prompt}"
        if model == "small-8b":
            assert answered == "small-8b"

    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=shared_gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=60
        ) as client:
            await asyncio.gather(*(one(client, i) for i in range(N_REQUESTS)))

    asyncio.run(asyncio.wait_for(main(), 120))

    assert sum(fake.counts().values()) == N_REQUESTS
    wait_for(lambda: shared_gateway.metric("entrorouter_in_flight_requests") == 0, 10, "in-flight to drain")
    batches = shared_gateway.metric("entrorouter_routing_batch_size_count", worker="0") - batches_before
    texts = shared_gateway.metric("entrorouter_routing_batch_size_sum", worker="0") - texts_before
    assert texts > batches, "routing requests were never batched under load"


def test_few_requests_route_in_the_gateway_many_go_to_the_workers(router_dir, fake) -> None:
    """With a cheap router (the tests' hashed TF-IDF), a request routes on the event loop while
    at most ``inline_max_in_flight`` are in flight; beyond that the workers batch them."""
    config = gateway_config(router_dir, fake.base_url, routing={"inline_max_ms": 1000, "inline_max_in_flight": 2})
    with RunningGateway(config) as running:
        with running.client() as client:
            for i in range(5):  # one at a time: each routed in the gateway process
                answer = client.post("/v1/chat/completions", json=chat_body(f"alone {i}: explain a sonnet"))
                model = answer.headers["x-entrorouter-model"]
                assert answer.json()["choices"][0]["message"]["content"] == f"[{model}] alone {i}: explain a sonnet"
        assert running.metric("entrorouter_routing_batch_size_count", worker="gateway") == 5
        assert running.metric("entrorouter_routing_batch_size_count", worker="0") == 0

        async def together() -> None:
            async with openai.AsyncOpenAI(base_url=running.base_url, api_key=CLIENT_KEY, max_retries=0) as client:
                await asyncio.gather(
                    *(
                        client.chat.completions.create(
                            model="entrorouter", messages=[{"role": "user", "content": f"q {i}"}]
                        )
                        for i in range(40)
                    )
                )

        asyncio.run(asyncio.wait_for(together(), 60))
        assert running.metric("entrorouter_routing_batch_size_sum", worker="0") > 0  # the crowd went to the worker
        inline = running.metric("entrorouter_routing_batch_size_count", worker="gateway")
        workers = running.metric("entrorouter_routing_batch_size_sum", worker="0")
        assert inline + workers == 45
