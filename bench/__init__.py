"""`make bench`: billing-streams measured beside the alternatives, on the same data, in one run.

Every figure comes with its ratio to a baseline measured in the same invocation (absolute numbers
move from machine to machine, ratios measured together do not). The run starts its own Tansu
broker and its own private Postgres server, so nothing else on the machine is touched; see
`bench/RESULTS.md` for the last full run and `python -m bench --help` for the knobs.

One module per measurement: `e2e` (the worker, one and two of them, both record layouts),
`seed` (the Django/Celery pipeline we replace), `naive` + `naive_app` (textbook Faust),
`ceiling` (bare consumers), `produce` (ChargeProducer vs a bare producer), `latency`,
`scale` (memory, on-disk bytes, throughput at growing key counts, recovery after SIGKILL),
`components` (decode and the sink alone), `explain` (each write statement of one flush under
EXPLAIN ANALYZE: time, buffers and WAL per charge).
"""
