"""Checks of what users submit, shared by the conductor, the CLI and the
bridges: batch ids, items, options, URLs; and the digest that tells a
retried submit from a different batch under the same id.
"""

import hashlib
import json
import re
import urllib.parse

from rpcmq.conductor.errors import InvalidBatch
from rpcmq.conductor.schema import SHOWN_STATES
from rpcmq.storage.base import validate_key
from rpcmq.storage.errors import InvalidKey

__all__ = ['BATCH_ID_RE', 'ITEM_FIELDS', 'items_digest', 'url_problem',
           'validate_batch_id', 'validate_items', 'validate_options',
           'validate_state']

ITEM_FIELDS = ('url', 'key', 'name')
BATCH_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$')


def url_problem(url):
    """None if ``url`` is an http(s) URL with a host and no whitespace,
    else what is wrong with it (the conductor itself lets such items fail
    one by one; the CLI and bridges refuse them before submitting)."""
    if not isinstance(url, str) or not url.strip():
        return 'not a non-empty string'
    url = url.strip()
    try:
        url.encode('utf-8')
    except UnicodeEncodeError:
        return 'holds a lone UTF-16 surrogate'
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        return 'not a URL: %s' % exc
    if parts.scheme.lower() not in ('http', 'https') or not host:
        return 'not an http(s) URL with a host'
    if any(c.isspace() for c in url):
        return 'contains whitespace'
    return None


def _bad(reason):
    return InvalidBatch(reason=reason)


def _optional_str(item, field, where):
    value = item.get(field)
    if value is not None and not isinstance(value, str):
        kind = type(value).__name__
        raise _bad(f'{where}: {field!r} must be a str or null, not {kind}')
    return value


def _validate_item(item, idx):
    where = f'item {idx}'
    if isinstance(item, str):
        item = {'url': item}
    if not isinstance(item, dict):
        kind = type(item).__name__
        raise _bad(f'{where} must be an object like {{"url": ...}}, '
                   f'not {kind}')
    unknown = sorted(set(item) - set(ITEM_FIELDS))
    if unknown:
        names = ', '.join(map(repr, unknown))
        raise _bad(f'{where} has unknown field(s) {names}; '
                   'allowed: url, key, name')
    url = item.get('url')
    if not isinstance(url, str) or not url.strip():
        raise _bad(f'{where} needs "url", a non-empty str, not {url!r}')
    key = _optional_str(item, 'key', where)
    if key is not None:
        try:
            validate_key(key)
        except InvalidKey as exc:
            raise _bad(f'{where}: {exc}') from None
    return {'url': url.strip(), 'key': key,
            'name': _optional_str(item, 'name', where)}


def validate_items(items, start=0):
    """Return the items as ``[{url, key, name}]`` or raise InvalidBatch.

    A bare str is taken as ``{"url": str}``. Keys must be unique within the
    batch, or two items would overwrite each other's object.
    """
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, '__len__'):
        raise _bad('items must be a list of {"url", "key"?, "name"?}, '
                   f'not {type(items).__name__}')
    if not items:
        raise _bad('a batch needs at least one item')
    rows = [_validate_item(item, idx)
            for idx, item in enumerate(items, start)]
    seen = {}
    for idx, row in enumerate(rows, start):
        key = row['key']
        if key is not None and seen.setdefault(key, idx) != idx:
            raise _bad(f'items {seen[key]} and {idx} both use key {key!r}')
    return rows


def items_digest(rows):
    """SHA-256 (hex) of validated item rows, the same for the same items
    in the same order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row['url'], row['key'], row['name']],
                                 separators=(',', ':')).encode('utf-8'))
        digest.update(b'\n')
    return digest.hexdigest()


def validate_batch_id(batch_id):
    if not isinstance(batch_id, str) or not BATCH_ID_RE.match(batch_id):
        raise _bad(f'batch id {batch_id!r} must be 1-64 letters, digits '
                   'or "_.:-", starting with a letter or digit')
    return batch_id


def validate_options(options):
    if options is None:
        return {}
    if not isinstance(options, dict):
        kind = type(options).__name__
        raise _bad(f'options must be an object, not {kind}')
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise _bad(f'options must be JSON-serializable: {exc}') from None
    return options


def validate_state(state):
    if state not in SHOWN_STATES:
        raise _bad(f'unknown batch state {state!r}; use one of '
                   + ', '.join(SHOWN_STATES))
    return state
