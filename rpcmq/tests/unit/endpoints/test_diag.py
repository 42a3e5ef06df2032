"""The diag endpoint's cast counter, as a benchmark reads it."""

import time

import pytest

from rpcmq.endpoints.diag import DiagEndpoint
from rpcmq.exceptions import MethodDisabled


def test_bumps_tells_how_many_casts_ran_and_when():
    diag = DiagEndpoint(unsafe=True)
    assert diag.bumps({}) == {'count': 0, 'first': None, 'last': None}
    before = time.time()
    for _ in range(3):
        diag.bump({})
    seen = diag.bumps({})
    assert seen['count'] == diag.count({}) == 3
    assert before <= seen['first'] <= seen['last'] <= time.time()


def test_bumps_is_refused_unless_unsafe_methods_are_on():
    with pytest.raises(MethodDisabled, match='unsafe_methods'):
        DiagEndpoint(unsafe=False).bumps({})
