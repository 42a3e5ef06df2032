"""The small pictures of a batch page: made by the dashboard from the file
store (never the stored bytes as they are), or a signed URL of a store
that can sign one."""

import io

import pytest
from PIL import Image

from rpcmq.tests.unit.dashboard.conftest import (
    THUMBNAIL_SIZE,
    batch,
    item,
    put_image,
)


def done(idx, key):
    return item(idx, 'done', result={
        'key': key, 'size': 1, 'etag': 'etag-%d' % idx,
        'url': 'file:///store/' + key, 'server': 'demo-1'})


@pytest.fixture
def pictures(conductor, store, tmp_path):
    """A batch whose items point at a JPEG, a PNG with alpha, a missing
    key, a failure, a key outside the store and a text file."""
    put_image(store, 'cats/tom.jpg', 'JPEG', (400, 300))
    put_image(store, 'cats/ghost.png', 'PNG', (300, 400), mode='RGBA')
    store.put_bytes('notes.txt', b'not a picture at all')
    put_image(store, 'elsewhere.jpg')
    (tmp_path / 'outside.jpg').write_bytes(store.get_bytes('elsewhere.jpg'))
    conductor.add(batch('pics', items=[
        done(0, 'cats/tom.jpg'), done(1, 'cats/ghost.png'),
        done(2, 'cats/missing.jpg'), item(3, 'failed'),
        done(4, '../outside.jpg'), done(5, 'notes.txt'),
        item(6, 'running')]))
    return conductor


def picture(answer):
    return Image.open(io.BytesIO(answer.content))


def test_a_stored_jpeg_is_shown_small(web, pictures):
    answer = web.get('/batches/pics/items/0/thumb')
    assert answer.status_code == 200
    assert answer.headers['content-type'] == 'image/jpeg'
    img = picture(answer)
    assert img.format == 'JPEG'
    assert img.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE * 3 // 4)
    assert answer.headers['cache-control'] == 'private, max-age=3600'
    assert pictures.called('status') == [
        {'batch_id': 'pics', 'items': True, 'offset': 0, 'limit': 1,
         'states': None}]


def test_a_png_with_alpha_stays_a_png(web, pictures):
    answer = web.get('/batches/pics/items/1/thumb')
    assert answer.status_code == 200
    assert answer.headers['content-type'] == 'image/png'
    img = picture(answer)
    assert img.format == 'PNG' and img.mode == 'RGBA'
    assert img.size == (THUMBNAIL_SIZE * 3 // 4, THUMBNAIL_SIZE)
    assert img.getpixel((5, 5))[3] == 128  # still half transparent


def test_a_batch_page_links_the_thumbnails_it_can_show(web, pictures):
    page = web.get('/batches/pics')
    assert 'src="/batches/pics/items/0/thumb"' in page.text
    assert 'src="/batches/pics/items/1/thumb"' in page.text


def test_a_key_missing_from_the_store_has_no_preview(web, pictures):
    answer = web.get('/batches/pics/items/2/thumb')
    assert answer.status_code == 404
    assert answer.text.startswith('no preview: the stored object cannot '
                                  'be read')


def test_an_item_that_is_not_done_has_no_thumbnail(web, pictures):
    for idx in (3, 6):
        answer = web.get('/batches/pics/items/%d/thumb' % idx)
        assert answer.status_code == 404
        assert answer.text == 'item %d of batch pics has no stored ' \
                              'image\n' % idx


def test_an_item_past_the_end_has_no_thumbnail(web, pictures):
    answer = web.get('/batches/pics/items/99/thumb')
    assert answer.status_code == 404
    assert 'has no stored image' in answer.text


def test_a_key_cannot_leave_the_store(web, pictures):
    answer = web.get('/batches/pics/items/4/thumb')
    assert answer.status_code == 404
    assert answer.text.startswith('no preview:')
    assert answer.headers['content-type'].startswith('text/plain')


def test_a_stored_object_that_is_no_image_has_no_preview(web, pictures):
    answer = web.get('/batches/pics/items/5/thumb')
    assert answer.status_code == 404
    assert 'not an image Pillow reads' in answer.text
    assert b'not a picture' not in answer.content


def test_a_thumbnail_of_an_unknown_batch_is_a_404(web, conductor):
    answer = web.get('/batches/nope/items/0/thumb')
    assert answer.status_code == 404
    assert 'No such batch' in answer.text


def test_thumbnails_are_kept_in_memory(web, pictures, store):
    first = web.get('/batches/pics/items/0/thumb')
    store.delete('cats/tom.jpg')
    again = web.get('/batches/pics/items/0/thumb')
    assert again.status_code == 200 and again.content == first.content


class SigningStore:
    """A store that signs URLs, as OSS does; it is never read."""

    def __init__(self):
        self.signed = []

    def signed_url(self, key, expires=300):
        self.signed.append((key, expires))
        return 'https://bucket.oss.example/%s?Expires=1&Signature=s' % key

    def open(self, key):
        raise AssertionError('a signing store is not read')


def test_a_store_that_signs_urls_sends_the_browser_there(
        open_dashboard, pictures):
    signing = SigningStore()
    _, web = open_dashboard(store=signing)
    answer = web.get('/batches/pics/items/0/thumb')
    assert answer.status_code == 302
    assert answer.headers['location'] == \
        'https://bucket.oss.example/cats/tom.jpg?Expires=1&Signature=s'
    assert signing.signed == [('cats/tom.jpg', 300)]
    assert web.get('/batches/pics/items/3/thumb').status_code == 404
    assert len(signing.signed) == 1
