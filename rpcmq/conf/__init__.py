"""All of rpcmq's options, one module per option group.

Each module in this package defines ``list_opts()`` returning
``[(group_name, [opts])]``. ``register_opts`` registers every group on a
``ConfigOpts``; ``list_opts`` feeds ``oslo-config-generator`` through the
``oslo.config.opts`` entry point.
"""

import importlib
import pkgutil
import re

from oslo_config import cfg

__all__ = ['register_opts', 'list_opts', 'load', 'configured_topics',
           'CONF']

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


def load(conf, argv, **kwargs):
    """Parse ``argv`` (``--config-file``...) into ``conf`` and read every
    option once, so a bad value stops the program now, not when the option
    is first used. Raises ConfigError with one line: which file, which
    option, what is wrong (no oslo.config traceback)."""
    from rpcmq.exceptions import ConfigError
    try:
        conf(argv, project='rpcmq', **kwargs)
    except cfg.ConfigFilesNotFoundError as exc:
        raise ConfigError(reason='config file not found: %s (give an '
                                 'existing --config-file)'
                          % ', '.join(exc.config_files)) from None
    except cfg.ConfigFileParseError as exc:
        raise ConfigError(reason='%s is not an INI config file: %s'
                          % (exc.config_file, exc.msg.split(', ', 1)[-1])) \
            from None
    except cfg.Error as exc:
        raise ConfigError(reason=str(exc)) from None
    for group, opts in list_opts():
        section = conf if group == 'DEFAULT' else conf[group]
        for opt in opts:
            try:
                getattr(section, opt.dest)
            except (cfg.Error, ValueError) as exc:
                # oslo.config names the file only inside its message
                where = re.search(r"detail='([^']*)'", str(exc))
                text = str(exc).split(' is not valid: ', 1)[-1]
                raise ConfigError(reason='%s: [%s] %s: %s' % (
                    where.group(1) if where else 'the command line',
                    group, opt.name, text)) from None
    return conf


def configured_topics(conf):
    """The RPC topics ``conf`` names, once each: ``[DEFAULT] topic`` and,
    where the conductor's options are registered, ``[conductor] topic``
    and ``image_topic`` (what ``rpcmq dead list`` and the dashboard look
    at when nobody names a topic)."""
    topics = [conf.topic]
    if 'conductor' in conf:
        topics += [conf.conductor.topic, conf.conductor.image_topic]
    return list(dict.fromkeys(topics))
