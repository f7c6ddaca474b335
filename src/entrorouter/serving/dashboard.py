"""A live view of one gateway replica: ``GET /dashboard`` (a page) fed by ``GET /dashboard/stats`` (JSON).

Prometheus (``/metrics``) is the contract for monitoring systems; this is for a person
with a browser and no monitoring stack. The page is a static, self-contained document
(no CDN, works offline) holding no data; the numbers come from the JSON endpoint, which
is behind the same client API keys as the API (``Authorization: Bearer``). The page asks
for the key once (or takes it from the URL fragment ``#key=…``, which browsers never send
to the server), keeps it in ``sessionStorage`` and sends it as a Bearer header.

What it shows, over a sliding window (default 60 s) unless it says "total": requests/s,
each model's share of routed requests, routing latency (queue + router) and upstream
latency (request time minus routing: the backend call with retries and fallbacks)
p50/p99, fallbacks, open circuits, and the estimated saving against sending everything to
the strongest model — priced by the router's own cost predictor (the same ĉ(q, k) it
routes with), so it is an estimate, not an invoice. Everything is per replica.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from entrorouter.serving.breaker import CircuitState
from entrorouter.serving.chat import ApiError

if TYPE_CHECKING:
    from entrorouter.serving.app import Gateway
    from entrorouter.serving.batcher import RouterSummary

WINDOW_S = 60.0
MAX_SAMPLES = 100_000  # per window: bounds memory whatever the request rate


class DashboardStats:
    """Counters and latency samples of the requests this replica handled."""

    def __init__(self, router: RouterSummary, *, window_s: float = WINDOW_S, max_samples: int = MAX_SAMPLES) -> None:
        self.router = router
        self.window_s = window_s
        self.started = time.monotonic()
        self.strongest = router.strongest
        self._strongest_index = router.models.index(self.strongest)
        self._model_index = {m: i for i, m in enumerate(router.models)}
        self.routed_events: deque[tuple[float, str, float]] = deque(maxlen=max_samples)  # (t, model, route ms)
        self.upstream_events: deque[tuple[float, float]] = deque(maxlen=max_samples)  # (t, upstream ms)
        self.requests_total = 0
        self.model_totals: Counter[str] = Counter()
        self.fallbacks_total = 0
        self.errors_total = 0
        self.cost_routed = 0.0  # predicted US$ of the models chosen
        self.cost_strongest = 0.0  # predicted US$ had every request gone to the strongest model

    def routed(self, model: str, text: str, route_ms: float | None) -> None:
        """A request got its model (chosen by the router, or named by the client)."""
        now = time.monotonic()
        self.requests_total += 1
        self.model_totals[model] += 1
        self.routed_events.append((now, model, np.nan if route_ms is None else route_ms))
        predictor = self.router.cost_predictor
        self.cost_routed += predictor.predict_one(text, self._model_index[model])
        self.cost_strongest += predictor.predict_one(text, self._strongest_index)

    def finished(self, record: dict[str, Any]) -> None:
        """A request's log record, once it is answered (or failed)."""
        if record.get("status", 200) >= 400 and "chosen" in record:
            self.errors_total += 1
        self.fallbacks_total += int(record.get("fallbacks") or 0)
        if "backend" in record and record.get("duration_ms") is not None:
            upstream_ms = record["duration_ms"] - (record.get("route_ms") or 0.0)
            self.upstream_events.append((time.monotonic(), upstream_ms))

    def snapshot(self, gateway: Gateway) -> dict[str, Any]:
        """The JSON the page shows."""
        now = time.monotonic()
        since = now - self.window_s
        while self.routed_events and self.routed_events[0][0] < since:
            self.routed_events.popleft()
        while self.upstream_events and self.upstream_events[0][0] < since:
            self.upstream_events.popleft()
        window = min(self.window_s, max(now - self.started, 1e-9))
        recent = Counter(model for _, model, _ in self.routed_events)
        n_recent = sum(recent.values())
        circuits = {name: upstream.breaker.state.value for name, upstream in gateway.upstreams.items()}
        return {
            "uptime_s": round(now - self.started, 1),
            "window_s": self.window_s,
            "requests_per_s": n_recent / window,
            "requests_total": self.requests_total,
            "share": {m: recent[m] / n_recent if n_recent else 0.0 for m in self.router.models},
            "requests_by_model_total": {m: self.model_totals[m] for m in self.router.models},
            "routing_ms": _percentiles([ms for _, _, ms in self.routed_events]),
            "upstream_ms": _percentiles([ms for _, ms in self.upstream_events]),
            "fallbacks_total": self.fallbacks_total,
            "errors_total": self.errors_total,
            "circuits": circuits,
            "open_circuits": sorted(n for n, s in circuits.items() if s != CircuitState.CLOSED.value),
            "saving": {
                "strongest_model": self.strongest,
                "predicted_cost_usd": self.cost_routed,
                "predicted_cost_strongest_usd": self.cost_strongest,
                "fraction": 1 - self.cost_routed / self.cost_strongest if self.cost_strongest > 0 else 0.0,
            },
        }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    samples = np.asarray(values, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(samples, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def dashboard_routes(gateway: Gateway) -> list[Route]:
    """``/dashboard`` (the page, no data in it) and ``/dashboard/stats`` (JSON, client keys)."""

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    async def stats(request: Request) -> Response:
        try:
            gateway._authorize(request)
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        if gateway.dashboard is None:
            return JSONResponse({"error": {"message": "the router is still starting"}}, 503)
        return JSONResponse(gateway.dashboard.snapshot(gateway), headers={"cache-control": "no-store"})

    return [Route("/dashboard", page, methods=["GET"]), Route("/dashboard/stats", stats, methods=["GET"])]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EntroRouter gateway</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:18px;margin:0} #status{font-size:13px;opacity:.8}
main{max-width:1100px;margin:0 auto;padding:20px 24px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px}
.card{background:#fff;border-radius:8px;padding:14px 16px;box-shadow:0 1px 3px #0002}
.card h2{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#667;margin:0 0 6px}
.card .v{font-size:26px;font-weight:600} .card .s{font-size:12px;color:#667}
table{width:100%;border-collapse:collapse;background:#fff;border-radius:8px;margin-top:18px;box-shadow:0 1px 3px #0002}
td,th{padding:7px 12px;text-align:left;border-bottom:1px solid #eee;font-size:14px}
.bar{height:10px;background:#3d7be0;border-radius:5px;min-width:1px}
.open{color:#c0392b;font-weight:600}
form{background:#fff;padding:20px;border-radius:8px;max-width:420px;box-shadow:0 1px 3px #0002}
input{width:100%;padding:8px;margin:8px 0;box-sizing:border-box;font:inherit}
</style></head>
<body>
<header><h1>EntroRouter gateway — this replica</h1><span id="status">connecting…</span></header>
<main>
<form id="key-form" hidden>
  <label for="key">Client API key (kept in this tab's sessionStorage only)</label>
  <input id="key" type="password" autocomplete="off"><button type="submit">Show dashboard</button>
</form>
<div id="board" hidden>
<div class="cards">
  <div class="card"><h2>Requests / s</h2><div class="v" id="rps">–</div><div class="s" id="window"></div></div>
  <div class="card"><h2>Requests (total)</h2><div class="v" id="total">–</div></div>
  <div class="card"><h2>Routing p50 / p99</h2><div class="v" id="routing">–</div>
    <div class="s">ms, queue + router</div></div>
  <div class="card"><h2>Upstream p50 / p99</h2><div class="v" id="upstream">–</div>
    <div class="s">ms, backend call incl. retries</div></div>
  <div class="card"><h2>Fallbacks (total)</h2><div class="v" id="fallbacks">–</div>
    <div class="s" id="errors"></div></div>
  <div class="card"><h2>Open circuits</h2><div class="v" id="circuits">–</div></div>
  <div class="card"><h2>Saving vs strongest</h2><div class="v" id="saving">–</div>
    <div class="s" id="saving-detail"></div></div>
</div>
<table><thead><tr><th>model</th><th>share (window)</th><th style="width:45%"></th><th>requests (total)</th>
<th>circuit</th></tr></thead><tbody id="models"></tbody></table>
</div>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const refreshMs = Math.max(250, Number(params.get("refresh")) || 2000);
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("key")) {
  sessionStorage.setItem("entrorouter-key", fragment.get("key"));
  history.replaceState(null, "", location.pathname + location.search);
}
const $ = (id) => document.getElementById(id);
const ms = (p) => p.p50 === null ? "–" : `${p.p50.toFixed(1)} / ${p.p99.toFixed(1)}`;
const pct = (x) => `${(100 * x).toFixed(1)}%`;
let timer = null;

function askForKey(message) {
  clearInterval(timer);
  $("board").hidden = true; $("key-form").hidden = false; $("status").textContent = message;
}

async function refresh() {
  const key = sessionStorage.getItem("entrorouter-key");
  if (!key) return askForKey("enter a client API key");
  let response;
  try {
    // relative: /dashboard -> /dashboard/stats, also behind a path prefix
    response = await fetch("dashboard/stats", {headers: {Authorization: `Bearer ${key}`}, cache: "no-store"});
  } catch (err) { $("status").textContent = `gateway unreachable (${err})`; return; }
  if (response.status === 401) { sessionStorage.removeItem("entrorouter-key"); return askForKey("key refused"); }
  if (!response.ok) { $("status").textContent = `stats: HTTP ${response.status}`; return; }
  const s = await response.json();
  $("key-form").hidden = true; $("board").hidden = false;
  $("rps").textContent = s.requests_per_s.toFixed(2);
  $("window").textContent = `last ${Math.min(s.window_s, s.uptime_s).toFixed(0)} s`;
  $("total").textContent = s.requests_total;
  $("routing").textContent = ms(s.routing_ms);
  $("upstream").textContent = ms(s.upstream_ms);
  $("fallbacks").textContent = s.fallbacks_total;
  $("errors").textContent = `${s.errors_total} failed after routing`;
  $("circuits").textContent = s.open_circuits.length;
  $("circuits").className = s.open_circuits.length ? "v open" : "v";
  $("saving").textContent = pct(s.saving.fraction);
  $("saving-detail").textContent = `predicted US$ ${s.saving.predicted_cost_usd.toPrecision(3)} vs ` +
    `${s.saving.predicted_cost_strongest_usd.toPrecision(3)} all on ${s.saving.strongest_model}`;
  const rows = Object.entries(s.share).map(([model, share]) => {
    const tr = document.createElement("tr");
    const circuit = s.circuits[model] || "–";
    for (const text of [model, pct(share), "", String(s.requests_by_model_total[model]), circuit]) {
      const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
    }
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = pct(share);
    tr.children[2].appendChild(bar);
    if (circuit !== "closed" && circuit !== "–") tr.children[4].className = "open";
    return tr;
  });
  $("models").replaceChildren(...rows);
  $("status").textContent = `updated ${new Date().toLocaleTimeString()} · every ${refreshMs / 1000} s`;
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("entrorouter-key", $("key").value.trim());
  start();
});
function start() { clearInterval(timer); refresh(); timer = setInterval(refresh, refreshMs); }
start();
</script>
</body></html>
"""
