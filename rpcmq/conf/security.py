"""Options of signed requests (docs/wire-format.md, "Signed messages")."""

from oslo_config import cfg

SECURITY_OPTS = [
    cfg.ListOpt('signing_keys', default=[], secret=True,
                help='Shared keys, "key_id:secret" each, optionally limited '
                     'to topics (and methods) with "@": '
                     '"bridge:SECRET@conductor" may only call topic '
                     'conductor, "ops:SECRET@image/fetch+image/store" only '
                     'those methods (fnmatch patterns: "image.*"). Several '
                     'keys are accepted at once, so a key can be rotated: '
                     'add the new one everywhere, switch signing_key_id, '
                     'then remove the old one. Secrets: 16 bytes or more, '
                     'no "@" (rpcmq keygen prints one).'),
    cfg.StrOpt('signing_key_id', default='',
               help='The key (from signing_keys) this process signs its '
                    'requests and notifications with; empty: the first '
                    'key, or no signing when there are no keys.'),
    cfg.BoolOpt('require_signed', default=False,
                help='Servers, the conductor, notification listeners and '
                     'the bridges refuse, before running anything, '
                     'messages that are unsigned, signed by an unknown or '
                     'unauthorised key, tampered with, outside '
                     'max_clock_skew or replayed.'),
    cfg.StrOpt('nonce_store', default='',
               help='Where receivers remember the nonces of signed '
                    'messages to refuse replays: empty, in each process '
                    '(a replay sent to another server of the same topic '
                    'within twice max_clock_skew is not caught), or a '
                    'redis:// URL shared by every server, the conductor '
                    'and the listeners (one SET NX per message). When that '
                    'Redis is unreachable, signed messages are refused.'),
    cfg.IntOpt('max_clock_skew', default=60, min=1,
               help='Seconds a signed message may be older (or newer) than '
                    'the receiver\'s clock; nonces are remembered twice '
                    'that long to refuse replays.'),

]

DEFAULT_OPTS = [
    cfg.BoolOpt('debug_tracebacks', default=False,
                help='Send the server-side traceback text in error '
                     'replies. Off, callers get the error type and message '
                     'only (server logs keep the full traceback).'),
]


def list_opts():
    return [('DEFAULT', DEFAULT_OPTS), ('security', SECURITY_OPTS)]
