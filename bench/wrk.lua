-- wrk script for bench/ingest.py:  wrk ... -s bench/wrk.lua <url> -- <prefix>
-- Thread n loads <prefix>-<n>.lua (a list of {path, headers, body} that ingest.py pre-generated
-- and signed; the threads' lists are disjoint, so a "new" delivery is new across threads) and
-- cycles through it. Answers are counted per status code; "wrapped" counts how often a thread
-- ran out of pre-generated requests and started again (then "new" ones are duplicates).
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local rows = dofile(args[1] .. "-" .. id .. ".lua")
  requests = {}
  for i, r in ipairs(rows) do
    requests[i] = wrk.format("POST", r[1], r[2], r[3])
  end
  index = 0
  wrapped = 0
  statuses = {}
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wrapped = wrapped + 1
  end
  return requests[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests_)
  local counts, wraps = {}, 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    wraps = wraps + t:get("wrapped")
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, '
      .. '"max_ms": %.3f, "socket_errors": %d, "wrapped": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout, wraps, table.concat(parts, ", ")))
end
