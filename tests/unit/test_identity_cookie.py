"""The identity cookie as the request middleware reads it: verified, and remembered only when short."""

from __future__ import annotations

from webapp.web.identity import CACHED_COOKIE_BYTES, COOKIE_NAME, IdentityCookie, Signer

IDENTITY = "u_" + "ab" * 12


def cookie_header(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"example.org"), (b"cookie", value.encode())]


def test_a_signed_cookie_is_read_again_and_again_and_a_forged_one_never() -> None:
    cookies = IdentityCookie("secret")
    signed = Signer("secret").sign(IDENTITY)
    for _ in range(3):
        assert cookies.read(cookie_header(f"lang=en; {COOKIE_NAME}={signed}")) == IDENTITY
    assert cookies.read(cookie_header(f"{COOKIE_NAME}={Signer('other').sign(IDENTITY)}")) is None
    assert cookies.read(cookie_header(f"{COOKIE_NAME}={signed[:-1]}x")) is None
    assert cookies.read([(b"host", b"example.org")]) is None


def test_a_long_cookie_header_is_read_but_not_remembered() -> None:
    cookies = IdentityCookie("secret")
    signed = Signer("secret").sign(IDENTITY)
    padding = "x" * CACHED_COOKIE_BYTES
    for n in range(20):
        assert cookies.read(cookie_header(f"pad{n}={padding}; {COOKIE_NAME}={signed}")) == IDENTITY
    assert cookies._verified.cache_info().currsize == 0
