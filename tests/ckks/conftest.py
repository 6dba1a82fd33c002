"""One standard CKKS context for the ckks tests (key generation is done once per session)."""

from __future__ import annotations

import pytest

from ckks.keys import PublicContext, SecretContext
from ckks.params import AGGREGATION

#: Max |decrypt(enc(x)) - x| for one fresh update under AGGREGATION: the target, which even one update
#: meets (measured ~6.7e-6 over 1.33M values, rms 6.3e-7).
TOL_ONE = 1e-5


@pytest.fixture(scope="session")
def secret_ctx() -> SecretContext:
    """The key authority's context for the aggregation preset."""
    return SecretContext.generate(AGGREGATION)


@pytest.fixture(scope="session")
def public_ctx(secret_ctx: SecretContext) -> PublicContext:
    """What devices and the aggregator hold: the public context, loaded from its bytes."""
    return PublicContext.from_bytes(secret_ctx.public.to_bytes())
