"""Does the charges topic keep what replay and rebuild need? Warnings for the worker's start."""

from __future__ import annotations

import logging
from datetime import timedelta

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.config.settings import Settings
from streams.kafka.client import aiokafka_options

log = logging.getLogger(__name__)


async def check_retention(settings: Settings) -> list[str]:
    """Warnings when the charges topic may drop records that replay and rebuild still need.

    A charge can still change its day's row up to BILLING_LATE_HORIZON after that day, so the
    topic must keep at least the horizon plus one day plus BILLING_MAX_CLOCK_SKEW; size-based
    retention or compaction (by account!) would silently lose charges. A broker that cannot
    describe configs (or omits them: Tansu enforces no retention) yields no warning.
    """
    topic = settings.charges_topic
    needed = settings.late_horizon + settings.max_clock_skew + timedelta(days=1)
    admin = AIOKafkaAdminClient(**aiokafka_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        answer = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        resource = answer[0].to_object()["resources"][0]
        configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    except Exception as exc:  # unsupported, unreachable, unknown topic: not this check's job
        log.debug("cannot describe the configs of topic %s: %r", topic, exc)
        return []
    finally:
        await admin.close()
    warnings = []
    ms = configs.get("retention.ms")
    if ms is not None and ms != "-1" and int(ms) < needed.total_seconds() * 1000:
        warnings.append(
            f"topic {topic} keeps records for {int(ms) / 86_400_000:g} days (retention.ms={ms}); replay and "
            f"rebuild need at least {needed.total_seconds() / 86400:g} days (BILLING_LATE_HORIZON + 1 day "
            f"+ BILLING_MAX_CLOCK_SKEW): set retention.ms=-1 or larger"
        )
    if configs.get("retention.bytes") not in (None, "-1"):
        warnings.append(
            f"topic {topic} has retention.bytes={configs['retention.bytes']}: size-based retention may "
            "delete charges that replay and rebuild need; set retention.bytes=-1"
        )
    if "compact" in (configs.get("cleanup.policy") or ""):
        warnings.append(
            f"topic {topic} has cleanup.policy={configs['cleanup.policy']}: compaction keeps one record per "
            "account and loses charges; use cleanup.policy=delete"
        )
    return warnings
