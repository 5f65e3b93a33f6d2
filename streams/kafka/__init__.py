"""Kafka as the pipeline uses it: client settings (SASL/TLS everywhere), topic creation,
retention checks, and reading a topic to its true end.
"""
