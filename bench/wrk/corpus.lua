-- wrk script for `make bench`: replays a pre-generated corpus of requests, one per line,
-- each request sent once (every signed request carries its own fresh signature).
--
-- Environment:
--   WBA_CORPUS  the corpus file: lines "path<TAB>header: value<TAB>header: value...", where
--               the path may be preceded by a method ("POST /x") and the last field may be
--               "body:<text>" (sent as the body, with its Content-Length)
--   WBA_START   first line to use (0-based; the warm-up and the measured run use disjoint
--               slices, so no signature is ever sent twice to the same Envoy)
--   WBA_COUNT   how many lines to use from WBA_START
--   WBA_HOST    the Host header (the authority the signatures cover)
--   WBA_OUT     where done() writes the summary as JSON
-- With several wrk threads, thread i takes lines i, i+T, i+2T... of the slice. A thread that
-- runs out starts its slice again and counts it in `wrapped` (the driver flags that run).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("WBA_CORPUS")
  local start = tonumber(os.getenv("WBA_START") or "0")
  local count = tonumber(os.getenv("WBA_COUNT") or "0")
  local host = os.getenv("WBA_HOST") or "localhost"
  local nthreads = tonumber(os.getenv("WBA_THREADS") or "1")
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i >= start + count then break end
    if i >= start and (i - start) % nthreads == id then
      local parts = {}
      for field in string.gmatch(line, "[^\t]+") do
        table.insert(parts, field)
      end
      local target = parts[1]
      if not string.find(target, " ") then target = "GET " .. target end
      local r = { target, " HTTP/1.1\r\nHost: ", host, "\r\n" }
      local body = nil
      for k = 2, #parts do
        if string.sub(parts[k], 1, 5) == "body:" then
          body = string.sub(parts[k], 6)
        else
          table.insert(r, parts[k])
          table.insert(r, "\r\n")
        end
      end
      if body then
        table.insert(r, "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      else
        table.insert(r, "\r\n")
      end
      table.insert(reqs, table.concat(r))
    end
    i = i + 1
  end
  n = #reqs
  idx = 0
  wrapped = 0
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local wraps = 0
  local loaded = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wrapped") or 0)
    loaded = loaded + (t:get("n") or 0)
  end
  local e = summary.errors
  local out = io.open(os.getenv("WBA_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}, ' ..
    '"corpus_loaded": %d, "wrapped": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, loaded, wraps))
  out:close()
end
