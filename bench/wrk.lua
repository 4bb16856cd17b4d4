-- Cycles through pre-generated requests (bench/ingest.py writes them, one file per thread so
-- that "new" ids are new across threads) and counts answers by status class.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  requests = dofile(args[1] .. "-" .. id .. ".lua")
  index = 0
  s2, s4, s5 = 0, 0, 0
end

function request()
  index = index % #requests + 1
  local r = requests[index]
  return wrk.format("POST", r[1], r[2], r[3])
end

function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1 else s2 = s2 + 1 end
end

function done(summary, latency, requests_)
  local a2, a4, a5 = 0, 0, 0
  for _, t in ipairs(threads) do
    a2 = a2 + t:get("s2"); a4 = a4 + t:get("s4"); a5 = a5 + t:get("s5")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.2f, "p99_ms": %.2f, "ok": %d, "client_errors": %d, "server_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, a2, a4, a5,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
