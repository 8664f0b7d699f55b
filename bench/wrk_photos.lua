-- wrk script: POST the photos listed in the file named by the first script argument as raw image bodies,
-- rotating through them; prints latency percentiles (ms) as one JSON line at the end.
--   wrk -t2 -c32 -d20s -s bench/wrk_photos.lua http://127.0.0.1:8000/classify -- /tmp/photo-list.txt
local bodies = {}
local counter = 0

function init(args)
  local list = io.open(args[1], "r")
  for path in list:lines() do
    local f = io.open(path, "rb")
    bodies[#bodies + 1] = f:read("*all")
    f:close()
  end
  list:close()
  counter = math.random(#bodies)
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "image/jpeg"}, bodies[counter])
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.mean / 1e3))
end
