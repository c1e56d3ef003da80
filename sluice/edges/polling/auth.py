"""API keys of polled feeds: where they come from, and adding them to requests as they leave.

In: a feed's ``ApiKeySpec`` (``sluice.parsing.feeds``), the environment, and a Secrets Manager lookup
(injected: the feed poller Lambda passes one built on boto3; the core never imports it).
Out: a ``Fetch`` that sends the key in its header or query parameter. The key never enters the
``HttpRequest`` the poller logs and retries with, never the URL a response, a checkpoint or an error
reports (a query parameter is taken off the final URL; error texts have the key replaced by ``***``).
Errors: ``ApiKeyUnavailable`` (the poll of that feed fails, naming the variable or secret, never a
value).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import replace

import orjson

from sluice.core.errors import SluiceError
from sluice.edges.polling.transport import Fetch, HttpRequest, HttpResponse, TransportError
from sluice.parsing.feeds import ApiKeySpec

__all__ = ["ApiKeyUnavailable", "SecretLookup", "resolve_api_key", "with_api_key"]

SecretLookup = Callable[[str], str]
"""A secret's text by name or ARN (AWS Secrets Manager ``GetSecretValue``'s ``SecretString``)."""


class ApiKeyUnavailable(SluiceError):
    """A feed's API key cannot be read (a variable unset, a secret missing or not readable)."""


def resolve_api_key(
    spec: ApiKeySpec,
    *,
    environ: Mapping[str, str] | None = None,
    secrets: SecretLookup | None = None,
) -> str:
    """The key ``spec`` names; raises ``ApiKeyUnavailable`` naming where it looked, never a value."""
    if spec.env is not None:
        value = (os.environ if environ is None else environ).get(spec.env, "")
        if not value:
            raise ApiKeyUnavailable(f"the API key variable {spec.env} is not set")
        return value
    secret_id = spec.secret_id or ""
    if secrets is None:
        raise ApiKeyUnavailable(f"no Secrets Manager client to read the secret {secret_id}")
    try:
        text = secrets(secret_id)
    except Exception as err:  # noqa: BLE001 - any client error: this feed fails, naming its class
        raise ApiKeyUnavailable(
            f"cannot read the secret {secret_id}: {type(err).__name__}"
        ) from None
    if spec.secret_key is None:
        value = text.strip()
    else:
        try:
            member = orjson.loads(text).get(spec.secret_key)
        except (orjson.JSONDecodeError, AttributeError):
            member = None
        if not isinstance(member, str):
            raise ApiKeyUnavailable(f"the secret {secret_id} has no string {spec.secret_key!r}")
        value = member
    if not value:
        raise ApiKeyUnavailable(f"the secret {secret_id} is empty")
    return value


def _with_param(url: str, name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([(name, value)])
    return parts._replace(query=f"{parts.query}&{query}" if parts.query else query).geturl()


def _without_param(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    kept = [
        (k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != name
    ]
    return parts._replace(query=urllib.parse.urlencode(kept)).geturl()


def with_api_key(fetch: Fetch, spec: ApiKeySpec, key: str) -> Fetch:
    """``fetch`` sending ``key`` as ``spec`` says, and scrubbing it from what comes back."""

    def send(request: HttpRequest) -> HttpResponse:
        if spec.header is not None:
            keyed = replace(request, headers={**request.headers, spec.header: spec.prefix + key})
        else:
            keyed = replace(request, url=_with_param(request.url, spec.query_param or "", key))
        try:
            response = fetch(keyed)
        except TransportError as err:
            raise TransportError(str(err).replace(key, "***")) from None
        if spec.query_param is not None and response.url:
            response = replace(response, url=_without_param(response.url, spec.query_param))
        return response

    return send
