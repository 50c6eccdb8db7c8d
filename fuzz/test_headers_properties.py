"""Properties of header rewriting: no input leaks a client credential upstream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshproxy_core.headers import request_headers_upstream

CREDENTIAL_NAMES = ["authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"]
MARK = b"ROOMSECRET"


def random_case(name: str) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: bytes(
            (c.upper() if f else c).encode()[0] for c, f in zip(name, flips, strict=True)
        )
    )


credential = (
    st.sampled_from(CREDENTIAL_NAMES)
    .flatmap(random_case)
    .flatmap(lambda name: st.binary(max_size=20).map(lambda v: (name, b"Bearer " + MARK + v)))
)
other = st.tuples(
    st.from_regex(rb"[a-z][a-z0-9\-]{0,20}", fullmatch=True),
    st.binary(max_size=30).filter(lambda v: MARK not in v),
)


@given(st.lists(credential | other, max_size=20))
def test_no_client_credential_travels_upstream(headers: list[tuple[bytes, bytes]]) -> None:
    injected = [(b"authorization", b"Bearer sk-provider")]
    out = request_headers_upstream(headers, credentials=injected)
    assert all(MARK not in value for _, value in out)
    assert [v for k, v in out if k.lower() == b"authorization"] == [b"Bearer sk-provider"]
    assert not any(k.lower() in (b"x-api-key", b"api-key", b"cookie") for k, _ in out)
    assert [k for k, _ in out].count(b"accept-encoding") == 1
