-- wrk script for bench/replay_server.sh: POST /v1/replay/<id> with a distinct id per request
-- (as the filter sends: a 16-byte hash in hex, x-wba-until, an empty body), so every answer
-- should be 201 fresh; a 409 or 503 shows as "Non-2xx or 3xx responses".
--
-- Arguments (after --): a run number, so that successive runs on one Redis never reuse ids.
-- Ids: 8 hex digits of the run, 8 of the wrk thread, 16 of a per-thread counter.

local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local prefix, counter, headers

function init(args)
  local run = tonumber(args[1]) or (os.time() % 2147483648)
  prefix = string.format("%08x%08x", run, tid or 0)
  counter = 0
  headers = { ["x-wba-until"] = tostring(os.time() + 600) }
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/replay/" .. prefix .. string.format("%016x", counter), headers, "")
end
