"""Runs last (file order): audits everything the mock upstream received during the session."""

from __future__ import annotations

from helpers import UPSTREAM_KEY, assert_no_gateway_key
from mock_upstream import header


def test_upstream_never_saw_a_gateway_key(gateway, upstream):
    recs = upstream.snapshot()
    assert recs, "the upstream received no request at all during the session"
    assert_no_gateway_key(recs)


def test_upstream_always_got_the_provider_key(gateway, upstream):
    recs = upstream.snapshot()
    assert recs
    bad = [(r["method"], r["path"], header(r, "authorization")) for r in recs
           if header(r, "authorization") != f"Bearer {UPSTREAM_KEY}"]
    assert bad == [], f"upstream requests without the provider key: {bad[:5]}"


def test_gateway_survived_the_session(gateway):
    assert gateway.proc is not None and gateway.proc.poll() is None, (
        f"gateway exited with {gateway.proc.returncode} during the session\n{gateway.logs()}"
    )
