"""Secrets read from files: `BILLING_<NAME>_FILE` (the Docker/Kubernetes secrets convention), a
settings source of its own, so that a password need not sit in the environment of every process
on the machine. It also holds the `BILLING_` prefix, which this source and `Settings` share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, ValidationError
from pydantic_settings import PydanticBaseSettingsSource

ENV_PREFIX = "BILLING_"
# Fields that may be read from the file named by BILLING_<FIELD>_FILE.
SECRET_FILE_FIELDS = (
    "database_url",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_key_password",
    "dashboard_token",
)


class SecretFiles(PydanticBaseSettingsSource):
    """`BILLING_<SECRET>_FILE=/run/secrets/x`: the secret is the file's content.

    One trailing newline is dropped (`echo pw > file` writes one); nothing else is touched.
    Setting both a variable and its `_FILE` is refused rather than guessed. Errors name the
    variable and the path, never the content. Read from the process environment only.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
        values: dict[str, Any] = {}
        for name in SECRET_FILE_FIELDS:
            var = f"{ENV_PREFIX}{name.upper()}"
            path = env.get(f"{var}_FILE")
            if not path:
                continue
            if env.get(var):
                _fail(f"{name}_file", f"set {var} or {var}_FILE, not both")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                _fail(f"{name}_file", f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8'}")
            value = text[:-1] if text.endswith("\n") else text
            value = value[:-1] if value.endswith("\r") else value
            if not value:
                _fail(f"{name}_file", f"{path} is empty")
            values[name] = value
        return values


def _fail(field: str, message: str) -> None:
    """Raise a ValidationError on `field` (so `billing` prints one line naming the variable)."""
    error = PydanticCustomError("secret_file", message)
    raise ValidationError.from_exception_data(
        "Settings", [{"type": error, "loc": (field,), "input": None}], hide_input=True
    )
