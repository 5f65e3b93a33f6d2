"""Which Postgres a process uses: the private server that `billing dev up` (or `demo`) recorded
in the data dir while it runs, else BILLING_DATABASE_URL; every command asks here, so that all of
them see the same database.
"""

from __future__ import annotations

import logging

from streams.config.settings import Settings
from streams.embedded.postgres import EmbeddedPostgres
from streams.redaction import url_target

log = logging.getLogger(__name__)


def effective_database_url(settings: Settings) -> str:
    """The URL a process should use: the private server recorded by `billing dev up` (or
    `demo`) in this data dir if any, else BILLING_DATABASE_URL.

    `dev up` starts that server only because BILLING_DATABASE_URL did not answer; while it is
    recorded, every command must talk to it, or each would see another database. When
    BILLING_DATABASE_URL was set explicitly, the switch is logged (targets only, no secrets)
    rather than made silently: `billing dev down` ends it."""
    recorded = EmbeddedPostgres(settings.data_dir).recorded_url()
    if recorded is None or recorded == settings.dsn:
        return settings.dsn
    if "database_url" in settings.model_fields_set:
        log.warning(
            "using the private Postgres at %s recorded in %s, not BILLING_DATABASE_URL (%s): "
            "`billing dev down` stops it",
            url_target(recorded),
            settings.data_dir,
            url_target(settings.dsn),
        )
    return recorded
