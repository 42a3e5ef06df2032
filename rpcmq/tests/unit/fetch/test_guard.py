"""The address guard: only public addresses, checked before connecting;
URLs with user info, overlong URLs and host names refused before any I/O."""

import json
import logging
import os
import pickle

import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.fetch import AddressGuard, BadURL, FetchOptions, ForbiddenAddress
from rpcmq.fetch.guard import check_url
from rpcmq.testing.imageserver import PRIVATE_TARGET

SECRET = 's3cret-pw'


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


def _assert_not_echoed(err, caplog, secret):
    """``secret`` is in no part of ``err`` and in no log line."""
    for text in (str(err), repr(err), json.dumps(err.kwargs),
                 str(pickle.loads(pickle.dumps(err))), caplog.text):
        assert secret not in text


@pytest.mark.parametrize('userinfo', ['user:%s@' % SECRET, 'user@',
                                      ':%s@' % SECRET, '@'])
def test_user_info_refused_before_any_io(server, fetcher, spool, caplog,
                                         connects, lookups, userinfo):
    caplog.set_level(logging.DEBUG)
    url = server.url('/img/userinfo.png').replace('://', '://' + userinfo)
    with pytest.raises(BadURL, match='user info') as info:
        fetcher.download(url, spool)
    assert '://***@127.0.0.1:' in str(info.value)
    assert info.value.url == url.replace(userinfo, '***@')
    _assert_not_echoed(info.value, caplog, SECRET)
    assert server.count('/img/userinfo.png') == 0
    assert (connects, lookups) == ([], [])
    assert not os.path.exists(spool)


@pytest.mark.parametrize('url', [
    'ftp://user:%s@example.com/a.jpg' % SECRET,
    'http://user:%s@exa mple.com/a.jpg' % SECRET,
    'http://user:%s@example.com:99999/a.jpg' % SECRET,
    'http://user:%s@[::1/a.jpg' % SECRET,
    'user:%s@example.com/a.jpg' % SECRET,
    '//user:%s@example.com/a.jpg' % SECRET,
    'http:/user:%s@example.com/a.jpg' % SECRET,
    'http:///user:%s@example.com/a.jpg' % SECRET,
    'http:\\\\user:%s@example.com/a.jpg' % SECRET,
    'http://user:%s@example.com\\@evil.com/a.jpg' % SECRET,
    'http://user:%s@%s.example/a.jpg' % (SECRET, 'a' * 300),
])
def test_password_of_any_refused_url_is_not_echoed(fetcher, spool, caplog,
                                                   lookups, url):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BadURL) as info:
        fetcher.download(url, spool)
    _assert_not_echoed(info.value, caplog, SECRET)
    assert '***@' in str(info.value)
    assert lookups == []


def test_redact():
    from rpcmq.fetch.urls import redact
    assert redact('http://u:p@h:1/x@y?a@b#c@d') == 'http://***@h:1/x@y?a@b#c@d'
    assert redact('http://h/x@y') == 'http://h/x@y'
    assert redact('HTTPS://a@b@h') == 'HTTPS://***@h'
    assert redact('//u:p@h/') == '//***@h/'
    assert redact('u:p@h/x') == 'u:***@h/x'
    assert redact('http:/u:p@h/') == 'http:/***@h/'
    assert redact('http:\\\\u:p@h\\@e/') == 'http:\\\\***@e/'
    assert redact('not a url') == 'not a url'


def test_overlong_url_refused_before_any_io(server, fetcher, spool, caplog,
                                           connects, lookups):
    caplog.set_level(logging.DEBUG)
    url = server.url('/img/long.png?pad=' + 'a' * 100_000)
    with pytest.raises(BadURL, match='max_url_length') as info:
        fetcher.download(url, spool)
    message = str(info.value)
    assert url[:100] + '...' in message
    assert len(message) < 400
    assert len(info.value.url) == 103
    assert max((len(r.getMessage()) for r in caplog.records), default=0) \
        < 1000
    assert server.count('/img/long.png') == 0
    assert (connects, lookups) == ([], [])


def test_max_url_length_option(server, conf, make_fetcher, spool):
    assert FetchOptions.from_conf(conf).max_url_length == 8192
    with pytest.raises(ValueError):
        conf.set_override('max_url_length', 63, 'image')
    fetcher = make_fetcher(max_url_length=64)
    url = server.url('/img/x.png?')
    fits = url + 'a' * (64 - len(url))
    assert fetcher.download(fits, spool).size > 0
    with pytest.raises(BadURL, match=r'65 characters.*max_url_length \(64\)'):
        fetcher.download(fits + 'a', spool)


LONG_LABEL = 'a' * 64 + '.example.com'                  # a label over 63
LONG_NAME = '.'.join(['a' * 63] * 4) + '.com'            # 259 characters


@pytest.mark.parametrize('host, reason', [
    (LONG_LABEL, 'label of 64 characters'),
    (LONG_NAME, '259 characters'),
    (LONG_NAME[:200] + '..com', 'empty label'),
])
def test_overlong_host_name_refused_before_resolving(make_fetcher, spool,
                                                     connects, lookups,
                                                     host, reason):
    fetcher = make_fetcher(download_retries=1)
    with pytest.raises(BadURL, match=reason) as info:
        fetcher.download('http://%s/x.png' % host, spool)
    assert info.value.kwargs.keys() == {'url', 'reason'}
    assert (connects, lookups) == ([], [])


@pytest.mark.parametrize('host', [
    'a' * 63 + '.example.com',
    '.'.join(['a' * 63] * 3 + ['a' * 61]),              # 253 characters
    '.'.join(['a' * 63] * 3 + ['a' * 61]) + '.',        # ... and the root
    '127.0.0.1', '[::1]', '[fe80::1%25eth0]', 'bücher.example',
])
def test_host_names_within_the_limits_pass(host):
    assert check_url('http://%s/x.png' % host).hostname
