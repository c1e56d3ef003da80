"""The Apache Beam stream job: thin adapters over the ``sluice`` core (see ``beam_jobs.pipeline``)."""

import logging


class _DropOptionalGcpNotice(logging.Filter):
    """Beam logs, at import, that Google Cloud client libraries are missing; Sluice does not use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_DropOptionalGcpNotice())
