-- wrk script of scripts/bench-serve: every connection walks a seeded list of
-- request paths (one per line in the file given after `--`), each wrk thread from
-- its own offset; `done` prints one line `BENCH {json}` with the numbers.
local threads = {}
local n = 0

function setup(thread)
  thread:set("id", n)
  n = n + 1
  table.insert(threads, thread)
end

local paths = {}
local at = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  at = (id * 7919) % #paths
end

function request()
  at = at % #paths + 1
  return wrk.format("GET", paths[at])
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
