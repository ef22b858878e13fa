"""One place that builds the msgraph-sdk client, for the real tenant and for the loopback fake."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def make_graph_client(*, base_url: str = GRAPH_BASE_URL, credential: Any = None, max_retries: int = 3,
                      timeout: float = 180.0) -> GraphServiceClient:
    """A GraphServiceClient whose requests go to ``base_url``.

    ``credential`` is an azure-identity (async) credential; it may be None only for a loopback
    base URL (the fake Graph), where no token is sent. The base URL is set without a trailing slash
    because the SDK's default yields ``/v1.0//users``. ``max_retries`` is the SDK RetryHandler's
    (it retries 429/503/504 on every method, POST included, honouring Retry-After); tests use 0.
    """
    base_url = base_url.rstrip("/")
    if credential is None:
        if not is_loopback(base_url):
            raise ValueError("a credential is required for a non-loopback Graph endpoint")
        auth: Any = AnonymousAuthenticationProvider()
    else:
        host = urlsplit(base_url).hostname or "graph.microsoft.com"
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[f"https://{host}/.default"],
                                                   allowed_hosts=[host])
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(timeout=timeout),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=max_retries,
                                                                  should_retry=max_retries > 0)},
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter)
