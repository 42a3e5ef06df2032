"""Signed messages: HMAC-SHA256 over the body and what decides where it runs.

A signer adds one header to a message (docs/wire-format.md, "Signed
messages", has the exact format and a test vector)::

    x-rpcmq-sig: "<key id> <timestamp ms> <nonce> <hex HMAC-SHA256>"

The nonce is 32 hex digits never used twice: 16 random per process, then
a counter (no system call per message).

The string to sign binds the kind of message (request, reply,
notification), the exchange and routing key it was published to, its
correlation id and deadline, the timestamp, the nonce and the SHA-256 of
the exact body bytes (method, namespace, version, context and arguments
all live in the body). A receiver checks, in this order: signed at all,
known key, signature, clock skew, nonce not seen within twice the skew,
and the key's scope (topic, and method once the body is decoded). Each
failure raises ``Unauthenticated`` saying which check failed and never
which key would have worked.

Nonces are remembered per process, or in a Redis shared by every
receiver (``[security] nonce_store``), which also refuses a replay sent to
another server of the topic. Signing does not encrypt: use TLS for that.
"""

import collections
import fnmatch
import hashlib
import hmac
import itertools
import os
import threading
import time

from rpcmq.exceptions import ConfigError, Unauthenticated

__all__ = ['Key', 'Keyring', 'string_to_sign', 'HEADER']

VERSION = b'rpcmq-sig-v1'
HEADER = 'x-rpcmq-sig'
KINDS = ('request', 'reply', 'notification')
MIN_SECRET_BYTES = 16


def string_to_sign(kind, exchange, routing_key, correlation_id, deadline,
                   ts, nonce, body):
    """The bytes a signature covers; every field is text, one per line."""
    if isinstance(body, str):  # py-amqp decodes bodies with an encoding
        body = body.encode('utf-8', 'surrogateescape')
    fields = (kind, exchange or '', routing_key or '', correlation_id or '',
              '' if deadline is None else str(deadline), str(ts), nonce,
              hashlib.sha256(body).hexdigest())
    return VERSION + b'\n' + '\n'.join(fields).encode('utf-8')


class Key:
    """One shared key: its id, secret and the topics/methods it may call."""

    __slots__ = ('key_id', 'secret', 'scopes', '_mac')

    def __init__(self, key_id, secret, scopes=()):
        self.key_id, self.secret, self.scopes = key_id, secret, scopes
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def mac(self, text):
        """hex HMAC-SHA256 of ``text`` (the keyed state is made once)."""
        mac = self._mac.copy()
        mac.update(text)
        return mac.hexdigest()

    @classmethod
    def parse(cls, entry):
        """``key_id:secret[@topic[/method]+...]``."""
        key_id, sep, rest = entry.strip().partition(':')
        secret, _, scope_text = rest.rpartition('@') if '@' in rest else \
            (rest, '', '')
        if not sep or not key_id or not secret:
            raise ConfigError(reason='[security] signing_keys: an entry '
                                     'must be "key_id:secret" (optionally '
                                     '"@topic/method+..."); got one for key '
                                     '%r' % key_id)
        if any(c in key_id for c in ' @,'):
            raise ConfigError(reason='[security] signing_keys: key id %r '
                                     'may hold letters, digits, - and _ '
                                     'only' % key_id)
        if len(secret.encode('utf-8')) < MIN_SECRET_BYTES:
            raise ConfigError(reason='[security] signing_keys: the secret '
                                     'of key %r is shorter than %d bytes; '
                                     'rpcmq keygen prints a good one'
                                     % (key_id, MIN_SECRET_BYTES))
        scopes = tuple(tuple(s.partition('/')[::2])
                       for s in scope_text.split('+') if s)
        return cls(key_id, secret.encode('utf-8'), scopes)

    def allows(self, topic, method=None):
        """True if this key may reach ``topic`` (and ``method``, when
        given; a scope without a method allows every method)."""
        if not self.scopes:
            return True
        for topic_pattern, method_pattern in self.scopes:
            if not fnmatch.fnmatchcase(topic or '', topic_pattern):
                continue
            if method is None or not method_pattern or \
                    fnmatch.fnmatchcase(method, method_pattern):
                return True
        return False


class _NonceSource:
    """Nonces unique in this process: 16 random hex digits, then a counter.
    A forked child gets a new prefix (``os.register_at_fork``), so parent
    and child never sign with the same nonce."""

    def __init__(self):
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self):
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self):
        return '%s%016x' % (self._prefix, next(self._counter))


_new_nonce = _NonceSource()


class _Nonces:
    """Nonces seen within ``ttl`` seconds, oldest first."""

    def __init__(self, ttl):
        self.ttl = ttl
        self._seen = collections.OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, nonce, now):
        with self._lock:
            while self._seen:
                oldest, expires = next(iter(self._seen.items()))
                if expires > now:
                    break
                del self._seen[oldest]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now + self.ttl
            return True


class _RedisNonces:
    """Nonces seen by any receiver sharing one Redis (SET NX EX)."""

    PREFIX = 'rpcmq:nonce:'

    def __init__(self, url, ttl):
        import redis
        self.ttl = max(1, int(ttl))
        self._redis = redis.Redis.from_url(url, socket_timeout=2,
                                           socket_connect_timeout=2)

    def first_time(self, nonce, now):
        import redis
        try:
            return bool(self._redis.set(self.PREFIX + nonce, b'1', nx=True,
                                        ex=self.ttl))
        except redis.RedisError as exc:
            raise Unauthenticated(reason='the replay check is unavailable '
                                         '([security] nonce_store: %s)'
                                  % exc) from None


class Keyring:
    """The keys of a process: signs with one, verifies with all."""

    def __init__(self, keys, signing_key_id='', max_clock_skew=60,
                 require_signed=False, nonce_store=''):
        self.keys = {k.key_id: k for k in keys}
        if signing_key_id and signing_key_id not in self.keys:
            raise ConfigError(reason='[security] signing_key_id %r is not '
                                     'one of signing_keys (%s)' % (
                                         signing_key_id,
                                         ', '.join(self.keys) or 'none'))
        self.signing_key = self.keys.get(signing_key_id) or \
            (keys[0] if keys else None)
        self.max_clock_skew = max_clock_skew
        self.require_signed = require_signed
        if require_signed and not keys:
            raise ConfigError(reason='[security] require_signed is on but '
                                     'signing_keys is empty')
        self._nonces = _RedisNonces(nonce_store, 2 * max_clock_skew) \
            if nonce_store else _Nonces(2 * max_clock_skew)

    @classmethod
    def from_conf(cls, conf):
        sec = conf.security
        return cls([Key.parse(e) for e in sec.signing_keys],
                   sec.signing_key_id, sec.max_clock_skew, sec.require_signed,
                   sec.nonce_store)

    def sign(self, kind, exchange, routing_key, body, correlation_id=None,
             deadline=None, key=None):
        """The headers that sign this message (empty without a key)."""
        key = key or self.signing_key
        if key is None:
            return {}
        ts = int(time.time() * 1000)
        nonce = _new_nonce()
        mac = key.mac(string_to_sign(kind, exchange, routing_key,
                                     correlation_id, deadline, ts, nonce,
                                     body))
        return {HEADER: '%s %d %s %s' % (key.key_id, ts, nonce, mac)}

    @staticmethod
    def is_signed(headers):
        return bool(headers) and HEADER in headers

    def verify(self, kind, headers, exchange, routing_key, body,
               correlation_id=None, deadline=None, topic=None):
        """The Key that signed this message; Unauthenticated saying why
        not (unsigned, unknown key, bad signature, stale, replayed, or a
        key not allowed on ``topic``)."""
        headers = headers or {}
        if not self.is_signed(headers):
            raise Unauthenticated(reason='the %s is not signed' % kind)
        value = headers[HEADER]
        if isinstance(value, bytes):
            value = value.decode('utf-8', 'replace')
        parts = value.split(' ') if isinstance(value, str) else ()
        if len(parts) != 4 or not parts[1].isdigit():
            raise Unauthenticated(reason='the %s has a malformed signature '
                                         'header' % kind)
        key_id, ts, nonce, mac = parts[0], int(parts[1]), parts[2], parts[3]
        key = self.keys.get(key_id)
        if key is None:
            raise Unauthenticated(reason='the %s is signed by an unknown key'
                                  % kind)
        expected = key.mac(string_to_sign(kind, exchange, routing_key,
                                          correlation_id, deadline, ts,
                                          nonce, body))
        if not hmac.compare_digest(expected, mac):
            raise Unauthenticated(reason='the signature of the %s does not '
                                         'match (tampered with, or signed '
                                         'with another secret)' % kind)
        now = time.time()
        if abs(now - ts / 1000.0) > self.max_clock_skew:
            raise Unauthenticated(reason='the %s was signed %.0fs from this '
                                         "receiver's clock, more than "
                                         'max_clock_skew (%ss)' % (
                                             kind, now - ts / 1000.0,
                                             self.max_clock_skew))
        if not self._nonces.first_time(nonce, now):
            raise Unauthenticated(reason='the %s is a replay (its nonce was '
                                         'seen already)' % kind)
        if topic is not None and not key.allows(topic):
            raise Unauthenticated(reason='the key %s may not call topic %s'
                                  % (key.key_id, topic))
        return key
