-- wrk script for bench/throughput.py: POST a CRMDData call event (the JSON in $WRK_BODY) to /CallEvent.
-- Extra headers (e.g. Authorization) come from wrk -H.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = assert(os.getenv("WRK_BODY"), "set WRK_BODY to the JSON request body")
