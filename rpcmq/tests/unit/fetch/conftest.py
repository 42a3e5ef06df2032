import sys

import pytest

from rpcmq.fetch import Fetcher

# What this process does with sockets while a test records it.
_connects = []   # addresses connected to
_lookups = []    # host names resolved (getaddrinfo)
_recording = []


def _audit(event, args):
    if not _recording:
        return
    if event == 'socket.connect':
        _connects.append(args[1][0] if isinstance(args[1], tuple) else None)
    elif event == 'socket.getaddrinfo':
        _lookups.append(args[0])


sys.addaudithook(_audit)


@pytest.fixture
def _audited():
    _connects.clear()
    _lookups.clear()
    _recording.append(True)
    yield
    _recording.clear()


@pytest.fixture
def connects(_audited):
    """Addresses this process connects sockets to during the test."""
    return _connects


@pytest.fixture
def lookups(_audited):
    """Host names this process resolves (getaddrinfo) during the test."""
    return _lookups


@pytest.fixture
def conf(image_conf):
    return image_conf


@pytest.fixture
def spool(conf):
    return conf.image.spool_dir


@pytest.fixture
def make_fetcher(conf):
    """make_fetcher(**image_overrides) -> a Fetcher on those options."""
    made = []

    def make(**overrides):
        for name, value in overrides.items():
            conf.set_override(name, value, 'image')
        made.append(Fetcher.from_conf(conf))
        return made[-1]

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def fetcher(make_fetcher):
    return make_fetcher()
