"""Configuration: `Settings` from BILLING_* variables (pydantic-settings) and the generated
configuration reference.
"""
