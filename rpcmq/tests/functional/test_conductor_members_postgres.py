"""Conductor membership scenarios (unit/conductor/test_members.py) on a
real PostgreSQL, each in its own schema."""

import pytest

# The scenarios, collected again here with the store_url fixture below.
from rpcmq.tests.unit.conductor.test_members import *  # noqa: F403


@pytest.fixture
def store_url(postgres_schema_url):
    return postgres_schema_url[0]
