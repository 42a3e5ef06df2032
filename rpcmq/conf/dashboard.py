"""Options of ``rpcmq-dashboard``, the web UI for batches and servers."""

from oslo_config import cfg

DASHBOARD_OPTS = [
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='Address the dashboard listens on. It shows '
                            'URLs, errors and stored images: listen beyond '
                            'localhost only with auth_token set and behind '
                            'TLS.'),
    cfg.PortOpt('port', default=8470,
                help='Port of the dashboard (HTTP). --port on the command '
                     'line overrides it.'),
    cfg.StrOpt('auth_token', default='', secret=True,
               help='Token that signs people in (a form asks for it) or '
                    'scripts (header "Authorization: Bearer TOKEN"). When '
                    'set, every page needs it; when empty, pages are open '
                    'to whoever reaches the port and the cancel and retry '
                    'buttons are off. Use 16 characters or more.'),
    cfg.IntOpt('page_size', default=50, min=1, max=1000,
               help='Batches or items per page.'),
    cfg.IntOpt('thumbnail_size', default=160, min=16, max=1024,
               help='Longest side, in pixels, of the thumbnails of stored '
                    'images on a batch page.'),
    cfg.FloatOpt('server_silent_after', default=30.0, min=1.0,
                 help='Seconds after its last server.alive notification '
                      'that a server is shown as silent (servers announce '
                      'themselves every [status] announce_interval).'),
]


def list_opts():
    return [('dashboard', DASHBOARD_OPTS)]
