"""`paycell loadtest`: a Singles'-Day load generator for the REST API, with a books check.

- `curve`: the arrival curve (warm-up, midnight spike, outage, backlog, decay) and the plan of
  requests it yields; percentile math.
- `server`: starts and stops `paycell serve` on a free loopback port.
- `setup`: merchants, buyers, top-ups and orders created through the API.
- `driver`: the open-loop generator (asyncio, one keep-alive connection per sender, bounded
  concurrency), in one or several processes.
- `wire`: the generator's minimal HTTP/1.1 keep-alive client (setup and the books check use
  httpx; the timed requests do not).
- `report`: per-second buckets, latencies, codes, sheds; the JSON report and optional chart.
- `books`: after the run, every acknowledged payment is in the books, none is half there.
- `runner`: the command itself.
"""
