-- wrk script: POST a small non-streamed chat completion and print percentiles as one line.
-- A failure is any answer that is not 2xx, or a connect, read, write or timeout error.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello in five words"}],"max_tokens":16}'

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then not2xx = not2xx + 1 end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local failures = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  for _, thread in ipairs(threads) do failures = failures + (thread:get("not2xx") or 0) end
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d requests=%d\n",
    summary.requests / seconds, latency:percentile(50), latency:percentile(99), failures, summary.requests))
end
