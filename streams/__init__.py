"""billing-streams: LLM usage charges on Kafka -> exact daily billing records in Postgres.

What an application needs to emit charges is importable from here:

    from streams import ChargeProducer, create_charge

    create_charge(account_id="acme", user_id="u1", provider="openai", charge_type="completion",
                  prompt_tokens=120, completion_tokens=80, model="gpt-4o")

`Charge` is the event (its schema of record is `schemas.charge`), `DeliveryError` what a send
raises when Kafka did not acknowledge, and `BillingError` the base of every error the package
raises on purpose (`streams.errors`). Everything else is reached through its subpackage; the
tree is described in docs/architecture.md.
"""

from schemas.charge import Charge
from streams.errors import BillingError, DeliveryError
from streams.producer.one_charge import acreate_charge, create_charge
from streams.producer.producer import ChargeProducer

__all__ = ["BillingError", "Charge", "ChargeProducer", "DeliveryError", "acreate_charge", "create_charge"]
