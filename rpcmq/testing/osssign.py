"""Server-side verification of OSS request signatures, V1 and V4.

Written from the signing code of oss2 2.19 (``oss2/auth.py``), which is
the reference: V1 is ``OSS <id>:<base64 HMAC-SHA1>`` over the verb,
Content-MD5, Content-Type, date, the ``x-oss-`` headers and the
canonicalized resource with its signed sub-resources; V4 is
``OSS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<product>/
aliyun_v4_request, Signature=<hex>[, AdditionalHeaders=a;b]``.

``verify(...)`` returns the :class:`Signer` or raises
:class:`SignatureError` carrying the OSS error code for the 403 reply.
"""

import base64
import calendar
import collections
import datetime
import email.utils
import hashlib
import hmac
import time

__all__ = ['SUBRESOURCES', 'SignatureError', 'Signer', 'verify']

#: Who signed a verified request: key id, 'v1' or 'v4', V4 region or ''.
Signer = collections.namedtuple('Signer', 'access_key_id version region')

#: Query parameters V1 signs (oss2 ProviderAuth._subresource_key_set).
SUBRESOURCES = frozenset([
    'response-content-type', 'response-content-language',
    'response-cache-control', 'logging', 'response-content-encoding', 'acl',
    'uploadId', 'uploads', 'partNumber', 'group', 'link', 'delete', 'website',
    'location', 'objectInfo', 'objectMeta', 'response-expires',
    'response-content-disposition', 'cors', 'lifecycle', 'restore', 'qos',
    'referer', 'stat', 'bucketInfo', 'append', 'position', 'security-token',
    'live', 'comp', 'status', 'vod', 'startTime', 'endTime', 'x-oss-process',
    'symlink', 'callback', 'callback-var', 'tagging', 'encryption', 'versions',
    'versioning', 'versionId', 'policy', 'requestPayment',
    'x-oss-traffic-limit', 'qosInfo', 'asyncFetch', 'x-oss-request-payer',
    'sequential', 'inventory', 'inventoryId', 'continuation-token', 'worm',
    'wormId', 'wormExtend', 'replication', 'replicationLocation',
    'replicationProgress', 'transferAcceleration', 'cname', 'metaQuery',
    'x-oss-ac-source-ip', 'x-oss-ac-subnet-mask', 'x-oss-ac-vpc-id',
    'x-oss-ac-forward-allow', 'resourceGroup', 'style', 'styleName',
    'x-oss-async-process', 'regionList', 'x-oss-write-get-object-response',
    'bucketArchiveDirectRead', 'httpsConfig', 'redundancyTransition',
    'x-oss-target-redundancy-type', 'x-oss-redundancy-transition-taskid',
    'accessPoint', 'accessPointPolicy', 'publicAccessBlock',
    'x-oss-access-point-name', 'requesterQosInfo', 'qosRequester',
    'resourcePoolInfo', 'resourcePool', 'resourcePoolBuckets',
])

#: Largest accepted clock difference between client and server.
MAX_SKEW = 15 * 60

_V4_ALGO = 'OSS4-HMAC-SHA256'
_V4_DEFAULT_SIGNED = ('content-type', 'content-md5')
_UNRESERVED = frozenset(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
                        b'0123456789_-~.')


class SignatureError(Exception):
    """The request is not signed by a known key; ``code`` is the OSS
    error code (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied,
    RequestTimeTooSkewed)."""

    def __init__(self, code, message, access_key_id=''):
        super().__init__(message)
        self.code = code
        self.message = message
        self.access_key_id = access_key_id


def verify(method, bucket, key, params, headers, secrets, now=None):
    """Check the Authorization header of one request.

    :param method: HTTP verb
    :param bucket: bucket name ('' for service requests)
    :param key: decoded object key ('' for bucket requests)
    :param params: decoded query parameters as a dict of str
    :param headers: request headers, a mapping with case-insensitive
        ``get`` and ``items()`` (e.g. ``http.client.HTTPMessage``)
    :param secrets: mapping access key id -> secret
    :return: a :class:`Signer`
    """
    auth = headers.get('authorization') or ''
    now = time.time() if now is None else now
    if auth.startswith('OSS '):
        return _verify_v1(method, bucket, key, params, headers, secrets,
                          auth[4:], now)
    if auth.startswith(_V4_ALGO + ' '):
        return _verify_v4(method, bucket, key, params, headers, secrets,
                          auth[len(_V4_ALGO) + 1:], now)
    raise SignatureError('AccessDenied', 'The request is not signed: send '
                         'an OSS V1 or OSS4-HMAC-SHA256 Authorization '
                         'header.')


def _secret_for(access_key_id, secrets):
    secret = secrets.get(access_key_id)
    if secret is None:
        raise SignatureError('InvalidAccessKeyId', 'The OSS Access Key Id '
                             'you provided does not exist in our records.',
                             access_key_id)
    return secret


def _x_oss_headers(headers, extra=()):
    found = {}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith('x-oss-') or low in extra:
            found[low] = value.strip()
    return sorted(found.items())


def _check_skew(stamp, now, access_key_id):
    if stamp is None or abs(now - stamp) > MAX_SKEW:
        raise SignatureError('RequestTimeTooSkewed', 'The difference '
                             'between the request time and the current '
                             'time is too large.', access_key_id)


def _verify_v1(method, bucket, key, params, headers, secrets, cred, now):
    access_key_id, sep, signature = cred.rpartition(':')
    if not sep or not access_key_id:
        raise SignatureError('InvalidArgument', 'Authorization header is '
                             'invalid: expected "OSS <id>:<signature>".')
    secret = _secret_for(access_key_id, secrets)
    date = headers.get('x-oss-date') or headers.get('date') or ''
    parsed = email.utils.parsedate_tz(date)
    _check_skew(email.utils.mktime_tz(parsed) if parsed else None, now,
                access_key_id)
    subs = sorted((k, v) for k, v in params.items() if k in SUBRESOURCES)
    resource = f'/{bucket}/{key}' if bucket else '/'
    if subs:
        resource += '?' + '&'.join(k + '=' + v if v else k for k, v in subs)
    canon = ''.join(f'{k}:{v}\n' for k, v in _x_oss_headers(headers))
    to_sign = '\n'.join([method, headers.get('content-md5') or '',
                         headers.get('content-type') or '', date,
                         canon + resource])
    digest = hmac.new(secret.encode(), to_sign.encode('utf-8'),
                      hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError('SignatureDoesNotMatch', 'The request '
                             'signature we calculated does not match the '
                             'signature you provided. Check your key and '
                             'signing method.', access_key_id)
    return Signer(access_key_id, 'v1', '')


def _v4_encode(text, keep_slash):
    out = []
    for b in text.encode('utf-8'):
        if b in _UNRESERVED or (keep_slash and b == 0x2F):
            out.append(chr(b))
        else:
            out.append(f'%{b:02X}')
    return ''.join(out)


def _parse_v4(value):
    fields = {}
    for part in value.split(','):
        name, sep, val = part.strip().partition('=')
        if sep:
            fields[name] = val
    try:
        access_key_id, date, region, product, term = \
            fields['Credential'].split('/')
        signature = fields['Signature']
    except (KeyError, ValueError):
        raise SignatureError('InvalidArgument', 'Authorization header is '
                             'invalid: expected "OSS4-HMAC-SHA256 '
                             'Credential=<id>/<date>/<region>/<product>/'
                             'aliyun_v4_request, Signature=<hex>".') from None
    if term != 'aliyun_v4_request':
        raise SignatureError('InvalidArgument', 'Credential scope must end '
                             'with aliyun_v4_request.', access_key_id)
    additional = [h for h in fields.get('AdditionalHeaders', '').split(';')
                  if h]
    return access_key_id, date, region, product, signature, additional


def _verify_v4(method, bucket, key, params, headers, secrets, value, now):
    access_key_id, date, region, product, signature, additional = \
        _parse_v4(value)
    secret = _secret_for(access_key_id, secrets)
    stamp = headers.get('x-oss-date') or ''
    try:
        when = datetime.datetime.strptime(stamp, '%Y%m%dT%H%M%SZ')
        when = calendar.timegm(when.timetuple())
    except ValueError:
        when = None
    _check_skew(when, now, access_key_id)
    if stamp[:8] != date:
        raise SignatureError('SignatureDoesNotMatch', 'The credential date '
                             'does not match x-oss-date.', access_key_id)
    extra = set(_V4_DEFAULT_SIGNED) | {h.lower() for h in additional}
    canon_headers = ''.join(f'{k}:{v}\n'
                            for k, v in _x_oss_headers(headers, extra))
    query = sorted((_v4_encode(k, False), _v4_encode(v, False))
                   for k, v in params.items())
    uri = f'/{bucket}/{key}' if bucket else '/'
    canonical = '\n'.join([
        method, _v4_encode(uri, True),
        '&'.join(k + '=' + v if v else k for k, v in query),
        canon_headers, ';'.join(sorted(h.lower() for h in additional)),
        headers.get('x-oss-content-sha256') or 'UNSIGNED-PAYLOAD'])
    scope = f'{date}/{region}/{product}/aliyun_v4_request'
    to_sign = '\n'.join([_V4_ALGO, stamp, scope,
                         hashlib.sha256(canonical.encode('utf-8'))
                         .hexdigest()])
    signing_key = ('aliyun_v4' + secret).encode()
    for part in (date, region, product, 'aliyun_v4_request'):
        signing_key = hmac.new(signing_key, part.encode(),
                               hashlib.sha256).digest()
    expected = hmac.new(signing_key, to_sign.encode('utf-8'),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError('SignatureDoesNotMatch', 'The request '
                             'signature we calculated does not match the '
                             'signature you provided. Check your key, '
                             'region and signing method.', access_key_id)
    return Signer(access_key_id, 'v4', region)

