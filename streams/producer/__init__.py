"""Emitting charges from an application: `ChargeProducer`, `create_charge`, delivery failures,
and the LiteLLM callback.
"""
