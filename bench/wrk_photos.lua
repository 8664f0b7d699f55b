-- wrk script: POST the photos listed in the file named by the first script argument, rotating through them;
-- prints latency percentiles (ms) as one JSON line at the end. With a second argument "v2", each photo goes as an
-- Open Inference Protocol request (binary tensor data: a JSON header, then the photo as one BYTES element) asking
-- for the top k (third argument, default 5) as classification strings, the v2 counterpart of /classify's answer;
-- otherwise as a raw body.
--   wrk -t2 -c32 -d20s -s bench/wrk_photos.lua http://127.0.0.1:8000/classify -- /tmp/photo-list.txt
--   wrk -t2 -c32 -d20s -s bench/wrk_photos.lua http://127.0.0.1:8000/v2/models/NAME/infer -- /tmp/photo-list.txt v2 5
local bodies = {}
local headers = {}
local counter = 0

local function le32(n)  -- a 4-byte little-endian unsigned length (LuaJIT has no string.pack)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256)
end

function init(args)
  local v2 = args[2] == "v2"
  local k = tonumber(args[3]) or 5
  local list = io.open(args[1], "r")
  for path in list:lines() do
    local f = io.open(path, "rb")
    local photo = f:read("*all")
    f:close()
    if v2 then
      local header = string.format(
        '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":%d}}],'
          .. '"outputs":[{"name":"probabilities","parameters":{"classification":%d}}]}', #photo + 4, k)
      bodies[#bodies + 1] = header .. le32(#photo) .. photo
      headers[#headers + 1] = {["Content-Type"] = "application/octet-stream", ["Inference-Header-Content-Length"] = tostring(#header)}
    else
      bodies[#bodies + 1] = photo
      headers[#headers + 1] = {["Content-Type"] = "image/jpeg"}
    end
  end
  list:close()
  counter = math.random(#bodies)
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", nil, headers[counter], bodies[counter])
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.mean / 1e3))
end
