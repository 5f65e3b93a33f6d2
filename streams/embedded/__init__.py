"""Dev-only services for `billing dev up`, `billing demo` and the tests: the Tansu broker and a
private Postgres. Never imported by the pipeline.
"""
