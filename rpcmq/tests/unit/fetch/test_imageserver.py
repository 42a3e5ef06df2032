import requests

from rpcmq.testing.imageserver import ImageServer, make_image


def test_images_are_deterministic_and_sized(server):
    first = requests.get(server.url('/img/same.jpg?kb=100')).content
    assert first == make_image('jpg', 'same', kb=100)
    assert 70 * 1024 < len(first) < 130 * 1024
    assert make_image('jpg', 'other', kb=100) != first


def test_counts_and_stop():
    with ImageServer() as srv:
        url = srv.url('/status/418')
        assert requests.get(url).status_code == 418
        requests.get(url + '?x=1')
        assert srv.count('/status/418') == srv.count(url) == 2
        srv.reset_counts()
        assert srv.count('/status/418') == 0
    assert srv._httpd is None
