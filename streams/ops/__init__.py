"""Operator jobs as libraries (no click): replay by offsets or time, rebuild days from the topic,
daily totals, and dead-letter handling. `streams.cli` turns them into commands.
"""
