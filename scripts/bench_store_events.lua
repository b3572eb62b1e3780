-- wrk script of scripts/bench-store: every request POSTs a batch of storefront
-- events (`-- BATCH TAG`: events per batch, a tag that keeps event ids unique
-- across runs and replicas); `done` prints `BENCH {json}` like bench_serve.lua.
local threads = {}
local n = 0

function setup(thread)
  thread:set("id", n)
  n = n + 1
  table.insert(threads, thread)
end

local batch = 1
local tag = "x"
local sent = 0

function init(args)
  batch = tonumber(args[1])
  tag = args[2]
end

function request()
  sent = sent + 1
  local events = {}
  for i = 1, batch do
    events[i] = string.format(
      '{"event_id":"%s-%d-%d-%d","event_type":"product_view","product_id":"p%d",' ..
      '"session_id":"bench-%d","timestamp":1790000000000}',
      tag, id, sent, i, (sent * 31 + i) % 500, sent % 1000)
  end
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"},
    "[" .. table.concat(events, ",") .. "]")
end

function done(summary, latency, requests)
  local e = summary.errors
  local ms = function(us) return us / 1000.0 end
  io.write(string.format(
    'BENCH {"requests": %d, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "mean_ms": %.3f, "errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency.max), ms(latency.mean), e.status,
    e.connect + e.read + e.write + e.timeout))
end
