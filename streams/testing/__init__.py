"""Test kit that ships with the package: deterministic synthetic charges for `billing demo`,
`billing produce --synthetic`, the benchmarks and the tests. The pipeline never imports it (the
crash points the fault harness arms are `streams.crashpoints`, inert unless asked for).
"""
