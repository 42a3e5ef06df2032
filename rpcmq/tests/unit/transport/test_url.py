import pytest

from rpcmq.exceptions import ConfigError
from rpcmq.transport.url import parse_url


def test_several_hosts_become_failover_urls():
    url = parse_url('rabbit://guest:guest@h1:5672,u2:p%40ss@h2:5673/prod')
    assert url.kombu_urls('pyamqp', '/') == [
        'pyamqp://guest:guest@h1:5672/prod',
        'pyamqp://u2:p%40ss@h2:5673/prod']
    assert url.hosts[1].password == 'p@ss'


def test_default_vhost_is_slash_for_rabbit():
    url = parse_url('rabbit://guest:guest@127.0.0.1:5672/')
    assert url.kombu_urls('pyamqp', '/') == [
        'pyamqp://guest:guest@127.0.0.1:5672/%2F']


def test_passwords_never_shown():
    url = parse_url('rabbit://admin:s3cret@h1:5672/')
    assert 's3cret' not in str(url)
    assert 'admin' in str(url)


@pytest.mark.parametrize('bad', ['', 'localhost:5672', 'rabbit://h:port/'])
def test_bad_urls_say_why(bad):
    with pytest.raises(ConfigError) as err:
        parse_url(bad)
    assert 'transport_url' in str(err.value)


def test_unknown_scheme_names_the_choices():
    from rpcmq.testing.server import make_conf
    from rpcmq.transport import get_transport
    with pytest.raises(ConfigError) as err:
        get_transport(make_conf(), url='kafka://h:9092/')
    assert 'rabbit://' in str(err.value) and 'kafka' in str(err.value)
