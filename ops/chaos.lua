-- bench/chat.lua's request, with each answer's status tallied: the chaos drill reports which
-- statuses its failures had (and wrk's socket errors) beside the RESULT line.
dofile("bench/chat.lua")

local tallied = {}
function setup(thread) table.insert(tallied, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end

function done(summary, latency, requests)
  local failures = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  local tally = {}
  for _, thread in ipairs(tallied) do
    for status, count in pairs(thread:get("statuses")) do
      tally[status] = (tally[status] or 0) + count
      if status < 200 or status > 299 then failures = failures + count end
    end
  end
  local parts = {}
  for status, count in pairs(tally) do table.insert(parts, string.format("s%d=%d", status, count)) end
  table.sort(parts)
  io.write(string.format("STATUS %s connect=%d read=%d write=%d timeout=%d\n", table.concat(parts, " "),
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99), failures, summary.requests))
end
