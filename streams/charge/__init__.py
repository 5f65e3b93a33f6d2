"""What travels on the topics, with no I/O: decoding bytes into charges (and refusals), the
records producers write, dead-letter envelopes, billing days in a time zone, provider usage
mapping and the JSON Schema export. The pydantic model itself is `schemas.charge`.
"""
