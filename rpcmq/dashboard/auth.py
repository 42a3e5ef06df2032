"""Who may look and who may act: ``[dashboard] auth_token``.

Without a token the pages are open (the dashboard listens on localhost
by default) and no action is allowed. With one, every page needs either
the header ``Authorization: Bearer TOKEN`` (scripts) or a session cookie
the sign-in form sets: ``<nonce>.<HMAC(token, nonce)>``. Sessions need no
server state, so they hold across restarts and across several dashboards
sharing the token; changing the token ends them all.

Actions are POST forms carrying a CSRF field, ``HMAC(token, "csrf:" +
nonce)`` of the session that rendered them; the cookie is
``SameSite=Strict`` and ``HttpOnly`` too, and a POST whose ``Origin`` is
another site is refused whatever it carries.
"""

import hashlib
import hmac
import secrets
import urllib.parse

__all__ = ['COOKIE', 'Guard', 'safe_next', 'same_origin']

COOKIE = 'rpcmq_dashboard'


def _mac(token, text):
    return hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()


class Guard:
    """The checks of one dashboard, for its token (empty: none)."""

    def __init__(self, token):
        self.token = token or ''

    @property
    def enabled(self):
        return bool(self.token)

    def new_session(self):
        nonce = secrets.token_hex(16)
        return '%s.%s' % (nonce, _mac(self.token, 'session:' + nonce))

    def session_nonce(self, request):
        """The nonce of the request's valid session cookie, else None."""
        value = request.cookies.get(COOKIE, '')
        nonce, _, mac = value.partition('.')
        if nonce and mac and hmac.compare_digest(
                mac, _mac(self.token, 'session:' + nonce)):
            return nonce
        return None

    def bearer(self, request):
        """True if the request carries ``Authorization: Bearer TOKEN``."""
        scheme, _, value = request.headers.get(
            'authorization', '').partition(' ')
        return scheme.lower() == 'bearer' and \
            self.token_matches(value.strip())

    def token_matches(self, given):
        return self.enabled and hmac.compare_digest(
            (given or '').encode(), self.token.encode())

    def signed_in(self, request):
        """May this request see the pages?"""
        if not self.enabled:
            return True
        return self.bearer(request) or \
            self.session_nonce(request) is not None

    def csrf_for(self, request):
        """The CSRF field of the forms rendered for ``request`` ('' when
        it may not act)."""
        nonce = self.session_nonce(request) if self.enabled else None
        return _mac(self.token, 'csrf:' + nonce) if nonce else ''

    def may_act(self, request, form):
        """None if ``request`` (a POST with ``form``) may change state;
        else why not, for the reply."""
        if not self.enabled:
            return ('actions are off: set [dashboard] auth_token to allow '
                    'cancel and retry')
        if not same_origin(request):
            return 'refused: the form was posted from another site'
        if self.bearer(request):
            return None
        expected = self.csrf_for(request)
        if not expected:
            return 'sign in first'
        if not hmac.compare_digest(str(form.get('csrf', '')).encode(),
                                   expected.encode()):
            return ('refused: the form is stale or forged (no valid CSRF '
                    'field); reload the page and try again')
        return None


def same_origin(request):
    """False when the request's Origin (or, without one, Referer) names
    another host than the one it was sent to."""
    origin = request.headers.get('origin') or request.headers.get('referer')
    if not origin or origin == 'null':
        return origin != 'null'
    return urllib.parse.urlsplit(origin).netloc == request.headers.get(
        'host', '')


def safe_next(path):
    """``path`` if it is a path on this site, else ``/``."""
    if not path or not path.startswith('/') or path.startswith('//') or \
            '\\' in path:
        return '/'
    return path
