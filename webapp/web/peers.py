"""Who is on the other end of the socket, and who they speak for.

uvicorn's ProxyHeadersMiddleware replaces the client address with the one a trusted proxy
names in X-Forwarded-For; the app does that itself (the same middleware, `FORWARDED_ALLOW_IPS`)
so that it can first note the socket's own peer (edge.py, `state["peer"]`): AUTH=proxy trusts the user-name header
only when that peer is a trusted proxy, whatever X-Forwarded-For says.
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request


class TrustedProxies:
    """FORWARDED_ALLOW_IPS as a matcher: addresses, networks, or '*'."""

    def __init__(self, spec: str) -> None:
        parts = [part.strip() for part in spec.split(",") if part.strip()]
        self.any = "*" in parts
        self.networks = []
        self.names = set()
        for part in parts:
            try:
                self.networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                self.names.add(part)  # e.g. a unix socket path

    def __contains__(self, host: str) -> bool:
        if self.any:
            return True
        if host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def is_internal(request: Request) -> bool:
    """The caller is this machine or one of the proxies FORWARDED_ALLOW_IPS names (not when that is '*'):
    who may read /metrics and /readyz?upstream=1 when no token guards them. The address is the one a
    trusted proxy's X-Forwarded-For gave, so a visitor relayed by a proxy on this machine is not internal."""
    host = request.client.host if request.client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return False
    trusted: TrustedProxies = request.app.state.trusted_proxies
    return not trusted.any and host in trusted


def trusted_proxy_user(request: Request) -> str:
    """AUTH=proxy: the user a trusted proxy names; "" when the header is missing or the peer untrusted."""
    settings = request.app.state.settings
    name = request.headers.get(settings.proxy_user_header, "").strip()
    return name if name and getattr(request.state, "peer", "") in request.app.state.trusted_proxies else ""
