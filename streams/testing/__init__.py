"""Test kit that ships with the package: deterministic synthetic charges (demo, bench, tests)
and crash points that the fault harness arms with BILLING_CRASH_POINT (inert otherwise).
"""
