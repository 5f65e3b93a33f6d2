"""The running worker: the thin Faust app, the meter (decode, dead-letter, flush), the day
closer, /metrics /health /ready, and `run_worker`.
"""
