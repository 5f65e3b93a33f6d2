"""The exactness rules as pure functions: what a worker batches between flushes (`batch`), what
one flush adds to which row (`settle`), and when a day may close (`closing`). The sink, the
worker and `billing rebuild` apply them; nothing here does I/O.
"""
