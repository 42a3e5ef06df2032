"""All of rpcmq's options, one module per option group.

Each module in this package defines ``list_opts()`` returning
``[(group_name, [opts])]``. ``register_opts`` registers every group on a
``ConfigOpts``; ``list_opts`` feeds ``oslo-config-generator`` through the
``oslo.config.opts`` entry point.
"""

import importlib
import pkgutil

from oslo_config import cfg

__all__ = ['register_opts', 'list_opts', 'CONF']

CONF = cfg.CONF


def _modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        yield importlib.import_module('%s.%s' % (__name__, info.name))


def list_opts():
    """Every (group, options) pair, for the sample config generator."""
    found = {}
    for module in _modules():
        for group, opts in module.list_opts():
            found.setdefault(group, []).extend(opts)
    return sorted(found.items(), key=lambda item: (item[0] != 'DEFAULT',
                                                   item[0]))


def register_opts(conf):
    """Register every rpcmq option on ``conf``; safe to call twice."""
    for group, opts in list_opts():
        conf.register_opts(opts, group=None if group == 'DEFAULT' else group)
    return conf
