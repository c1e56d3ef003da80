"""The MSF entry point (``main.py`` at the root of the application zip; ``python=main.py``).

Reads the application properties (MSF: ``/etc/flink/application_properties.json``; locally, with
``IS_LOCAL=true``, ``application_properties.json`` beside this file), builds the job
(``flink_jobs.app.job``) and submits it. A start-up problem is one line on standard error and exit
code 2 (MSF logs it through ``org.apache.flink.client.python.PythonDriver``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _libraries in (HERE / "dep",):  # the zip's libraries and the Sluice core, when unpacked
    if _libraries.is_dir() and str(_libraries) not in sys.path:
        sys.path.insert(0, str(_libraries))


def main() -> int:
    from flink_jobs.app.job import build
    from flink_jobs.app.settings import load_app_settings, properties_path
    from sluice.core.errors import ConfigError

    try:
        settings = load_app_settings(properties_path(HERE))
        statements = build(settings)
    except ConfigError as err:
        print(f"sluice flink app: {err}", file=sys.stderr)
        return 2
    result = statements.execute()
    if os.environ.get("SLUICE_APP_WAIT", "").lower() in ("1", "true"):
        result.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
