"""The address guard: only public addresses, checked before connecting."""

import sys

import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.fetch import AddressGuard, ForbiddenAddress
from rpcmq.testing.imageserver import PRIVATE_TARGET

_connects = []
_recording = []


def _audit(event, args):
    if event == 'socket.connect' and _recording:
        _connects.append(args[1][0] if isinstance(args[1], tuple) else None)


sys.addaudithook(_audit)


@pytest.fixture
def connects():
    """Addresses this process connects sockets to during the test."""
    _connects.clear()
    _recording.append(True)
    yield _connects
    _recording.clear()


@pytest.mark.parametrize('address,reason', [
    ('127.0.0.1', 'loopback'), ('10.1.2.3', 'private'),
    ('192.168.1.1', 'private'), ('172.16.0.1', 'private'),
    ('169.254.169.254', 'link-local'), ('224.0.0.1', 'multicast'),
    ('0.0.0.0', 'unspecified'), ('240.0.0.1', 'reserved'),
    ('100.64.0.1', 'not a globally routable'), ('::1', 'loopback'),
    ('fe80::1%eth0', 'link-local'), ('fc00::1', 'private'),
    ('::ffff:127.0.0.1', 'loopback'), ('ff02::1', 'multicast'),
])
def test_non_public_addresses_are_refused(address, reason):
    assert reason in AddressGuard().refusal(address)


@pytest.mark.parametrize('address', ['8.8.8.8', '1.1.1.1',
                                     '2606:4700:4700::1111'])
def test_public_addresses_pass(address):
    assert AddressGuard().refusal(address) is None


def test_allowed_networks_let_only_those_through():
    guard = AddressGuard(['127.0.0.1/32', 'fd00::/8'])
    assert guard.refusal('127.0.0.1') is None
    assert guard.refusal('fd12::1') is None
    assert guard.refusal('127.0.0.2') is not None
    assert guard.refusal('10.1.2.3') is not None


def test_allow_private_lets_everything_through():
    assert AddressGuard(allow_private=True).refusal('10.0.0.1') is None


def test_bad_allowed_network_is_a_config_error():
    with pytest.raises(ConfigError, match='allowed_networks'):
        AddressGuard(['10.0.0.0/33'])


def test_every_resolved_address_is_checked():
    # localhost resolves to 127.0.0.1 (and maybe ::1); allowing one is not
    # enough when another is refused.
    with pytest.raises(ForbiddenAddress, match='localhost resolves to'):
        AddressGuard().resolve('localhost', 80)


def test_loopback_url_refused_before_any_request(server, make_fetcher,
                                                 spool, connects):
    fetcher = make_fetcher(allow_private_networks=False)
    url = server.url('/img/guarded.png')
    with pytest.raises(ForbiddenAddress) as info:
        fetcher.download(url, spool)
    assert info.value.address == '127.0.0.1'
    assert info.value.url == url
    assert 'allowed_networks' in str(info.value)
    assert server.count('/img/guarded.png') == 0
    assert connects == []


def test_redirect_to_private_address_refused_before_connecting(
        server, make_fetcher, spool, connects):
    fetcher = make_fetcher(allow_private_networks=False,
                           allowed_networks=['127.0.0.1/32'])
    # The first hop is allowed ...
    assert fetcher.download(server.url('/img/allowed.png'), spool).size
    # ... the redirect to 10.1.2.3 is not, and is never connected to.
    url = server.url('/redirect-private')
    with pytest.raises(ForbiddenAddress) as info:
        fetcher.download(url, spool)
    assert info.value.address == '10.1.2.3'
    assert info.value.url == url
    assert PRIVATE_TARGET in str(info.value)
    assert server.count('/redirect-private') == 1
    assert '10.1.2.3' not in connects
    assert set(connects) == {'127.0.0.1'}
    assert sorted(f for f in __import__('os').listdir(spool)
                  if f.startswith('.part')) == []
