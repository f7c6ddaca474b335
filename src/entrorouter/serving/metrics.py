"""Prometheus metrics of one gateway, in their own registry (so tests can run several).

The names and labels are the contract with dashboards; ``docs/gateway.md`` lists them.
``model`` labels name the router's first choice (or the model asked for by name);
``backend`` labels name the backend a call went to.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets in seconds: routing is milliseconds, upstream calls up to minutes.
ROUTING_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "entrorouter_requests", "Chat requests, by chosen model", ["model", "stream"], registry=r
        )
        self.errors = Counter(
            "entrorouter_errors",
            "Chat requests that ended in an error after the model was chosen, by chosen model and kind",
            ["model", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "entrorouter_rejected", "Chat requests refused before routing, by reason", ["reason"], registry=r
        )
        self.answered = Counter(
            "entrorouter_answered", "Chat requests answered, by the backend that answered", ["backend"], registry=r
        )
        self.routing_seconds = Histogram(
            "entrorouter_routing_seconds",
            "Routing time per request: queueing for the batch + router inference",
            buckets=ROUTING_BUCKETS,
            registry=r,
        )
        self.router_inference_seconds = Histogram(
            "entrorouter_router_inference_seconds",
            "Router work per micro-batch (embedding + policy, in a router worker), without the queueing, by worker",
            ["worker"],
            buckets=ROUTING_BUCKETS,
            registry=r,
        )
        self.routing_queue_seconds = Histogram(
            "entrorouter_routing_queue_seconds",
            "Time a routing request waited for a router worker to take it, by the worker that took it",
            ["worker"],
            buckets=ROUTING_BUCKETS,
            registry=r,
        )
        self.routing_batch_size = Histogram(
            "entrorouter_routing_batch_size",
            'Texts per router call (micro-batch size), by worker ("gateway": routed in the gateway process)',
            ["worker"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.router_restarts = Counter(
            "entrorouter_router_restarts",
            "Router worker processes restarted after dying, by worker",
            ["worker"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "entrorouter_upstream_seconds",
            "Backend call time, from sending the request to the last byte (retries included)",
            ["backend"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "entrorouter_time_to_first_token_seconds",
            "Streaming: from the request's arrival to the first chunk relayed to the client",
            ["backend"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "entrorouter_upstream_retries", "Retries of a backend call, by backend", ["backend"], registry=r
        )
        self.fallbacks = Counter(
            "entrorouter_fallbacks",
            "Times a request moved past a backend to the next in the ranking, by backend and reason",
            ["backend", "reason"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "entrorouter_circuit_open", "1 while the backend's circuit is open or half-open", ["backend"], registry=r
        )
        self.in_flight = Gauge("entrorouter_in_flight_requests", "Chat requests being handled", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
