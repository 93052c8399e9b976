-- wrk script for bench/throughput.py: every request is about a different call.
--
-- WRK_MODE=post: POST /CallEvent, a CallAccepted CRMDData (every field present, as the platform sends
--   it) for CallID WRK_CALL_BASE + n, n = 0, 1, 2, ... (a thread's ids are 10^9 apart). The callers
--   cycle through eight kinds (bench/rules_eleven/tests/mix.yaml says what each is answered):
--   1 from the blocked robocall range 7800555*, 2 clients in the managers map, 3 unknown callers on a
--   company line in the lines map, 2 unknown callers on a line no rule covers.
--   With WRK_CALLERS=N, every caller is one of N numbers instead, 7916XXXXXXX (i % N), on the first
--   menu line: bench/lookups.py's callers, whose look-ups a cache holds.
-- WRK_MODE=poll: GET /CallEvent/{CallID} for WRK_CALLS calls from WRK_CALL_BASE, round robin: the
--   calls a POST run created.
-- WRK_MODE=calls: whole calls, four POSTs each, in order: CallAccepted, DTMF "1", ShortTransfer to 1001
--   (every other call answered, 1280; the others not, 1284), EndCall (Result 2 after an answer, else
--   1): bench/notify_overhead.py's calls, one in four POSTs ending a call.
-- Extra headers (Authorization) come from wrk -H. Every answer's status is counted; done() prints
-- one line, "bench-result {json}": requests, duration, latency percentiles, errors, statuses.

local mode = os.getenv("WRK_MODE") or "post"
local base = assert(tonumber(os.getenv("WRK_CALL_BASE")), "set WRK_CALL_BASE to the first CallID")
local calls = tonumber(os.getenv("WRK_CALLS") or "1")
local callers = tonumber(os.getenv("WRK_CALLERS") or "0")
assert(mode == "post" or mode == "poll" or mode == "calls", "WRK_MODE is post, poll or calls")

local body_format = '{"CallID":%.0f,"EventTime":"2027-03-16T10:30:00+03:00","EventType":1,'
  .. '"ServiceType":1,"AN":"%s","UN":"%s","DN1":"","DN2":"","EXT1":"","EXT2":"","DTMF":"",'
  .. '"Generic":"","Result":""}'
local step_format = '{"CallID":%.0f,"EventTime":"2027-03-16T10:30:%02d+03:00","EventType":%d,'
  .. '"ServiceType":1,"AN":"%s","UN":"74951234567","DTMF":"%s","EXT1":"%s","Result":"%s"}'
local menu_lines = {"74951234567", "74951234568", "74951230000", "74951230001", "74951239999"}
local uncovered_line = "74957654321"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  statuses = {}
  first = base + (id - 1) * 1e9
  n = 0
  if mode == "post" or mode == "calls" then
    wrk.headers["Content-Type"] = "application/json"
  else
    wrk.headers["Content-Type"] = nil
  end
end

local function caller(i)
  if callers > 0 then
    return string.format("7916%07d", i % callers), menu_lines[1]
  end
  local kind = i % 8
  if kind == 0 then
    return string.format("7800555%04d", i % 10000), menu_lines[1]
  elseif kind <= 2 then
    return string.format("7916000%04d", i % 1000), menu_lines[1 + i % 5]
  elseif kind <= 5 then
    return string.format("7903%07d", i % 10000000), menu_lines[1 + i % 5]
  end
  return string.format("7903%07d", i % 10000000), uncovered_line
end

function request()
  local i = n
  n = n + 1
  if mode == "poll" then
    return wrk.format("GET", string.format("/CallEvent/%.0f", first + i % calls))
  end
  if mode == "calls" then
    local call, step = math.floor(i / 4), i % 4
    local answered = call % 2 == 0
    local an = string.format("7916%07d", call % 10000000)
    local code, dtmf, ext, result = 1, "", "", ""
    if step == 1 then
      code, dtmf = 4, "1"
    elseif step == 2 then
      code, ext, result = 11, "1001", answered and "1280" or "1284"
    elseif step == 3 then
      code, result = 15, answered and "2" or "1"
    end
    local body = string.format(step_format, first + call, step * 10, code, an, dtmf, ext, result)
    return wrk.format("POST", "/CallEvent", nil, body)
  end
  local an, un = caller(i)
  return wrk.format("POST", "/CallEvent", nil, string.format(body_format, first + i, an, un))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'bench-result {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ",")))
end
