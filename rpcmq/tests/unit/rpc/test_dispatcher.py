import pytest

from rpcmq import Target, expected_exceptions
from rpcmq.exceptions import InvalidArguments, NoSuchMethod, UnsupportedVersion
from rpcmq.rpc.dispatcher import (
    ExpectedException,
    RPCDispatcher,
    version_is_compatible,
)


class V1:
    target = Target(namespace='image', version='1.3')

    def fetch(self, ctxt, url):
        return 'v1:' + url

    def _secret(self, ctxt):
        return 'leaked'

    @expected_exceptions(LookupError)
    def find(self, ctxt, key):
        raise KeyError(key)


class Default:
    def fetch(self, ctxt, url):
        return 'default:' + url


@pytest.mark.parametrize('implemented, requested, ok', [
    ('1.3', '1.0', True), ('1.3', '1.3', True), ('1.3', '1.4', False),
    ('2.0', '1.0', False), ('1.0', '1', True), ('1.x', '1.0', False)])
def test_version_compatibility(implemented, requested, ok):
    assert version_is_compatible(implemented, requested) is ok


def test_namespace_selects_the_endpoint():
    d = RPCDispatcher([V1(), Default()])
    assert d.dispatch({}, 'fetch', {'url': 'u'}, 'image', '1.2') == 'v1:u'
    assert d.dispatch({}, 'fetch', {'url': 'u'}) == 'default:u'


def test_newer_minor_or_other_major_is_unsupported():
    d = RPCDispatcher([V1()])
    with pytest.raises(UnsupportedVersion) as err:
        d.dispatch({}, 'fetch', {'url': 'u'}, 'image', '1.4')
    assert '1.4' in str(err.value) and 'image' in str(err.value)


def test_private_and_unknown_methods_are_not_callable():
    d = RPCDispatcher([V1()])
    for method in ('_secret', '__init__', 'missing'):
        with pytest.raises(NoSuchMethod):
            d.dispatch({}, method, {}, 'image', None)


def test_wrong_arguments_are_reported_before_running():
    d = RPCDispatcher([V1()])
    with pytest.raises(InvalidArguments) as err:
        d.dispatch({}, 'fetch', {'uri': 'u'}, 'image', None)
    assert 'fetch' in str(err.value) and "'url'" in str(err.value)


def test_expected_exceptions_are_marked():
    d = RPCDispatcher([V1()])
    with pytest.raises(ExpectedException) as err:
        d.dispatch({}, 'find', {'key': 'k'}, 'image', None)
    assert isinstance(err.value.exc, KeyError)


class Shapes:
    """Endpoint methods of every shape Python allows."""

    def plain(self, ctxt, a, b=2):
        return 'ran'

    def keyword_only(self, ctxt, *, a, b=2):
        return 'ran'

    def any_keyword(self, ctxt, a, **rest):
        return 'ran'

    def positional_only(self, ctxt, a, /, b=2):
        return 'ran'

    def ctxt_positional_only(self, ctxt, /, **rest):
        return 'ran'

    def star_args(self, ctxt, *more, a=1):
        return 'ran'

    def no_ctxt(self):
        return 'ran'

    def keyword_ctxt(self, *, ctxt):
        return 'ran'

    @staticmethod
    def static(ctxt, a):
        return 'ran'


ARGUMENTS = [{}, {'a': 1}, {'b': 1}, {'a': 1, 'b': 2}, {'a': 1, 'c': 3},
             {'ctxt': 1}, {'a': 1, 'ctxt': 1}, {'rest': 1}, {'more': 1},
             {'self': 1}, {'a': 1, 'b': 2, 'z-z': 3}]


@pytest.mark.parametrize('method', [m for m in vars(Shapes)
                                    if not m.startswith('_')])
def test_arguments_bind_exactly_as_python_binds_them(method):
    """Whatever the method's shape and the arguments sent, the request
    runs when Python could call it and is refused with Python's own words
    when not."""
    import inspect
    func = getattr(Shapes(), method)
    d = RPCDispatcher([Shapes()])
    for args in ARGUMENTS:
        try:
            inspect.signature(func).bind({}, **args)
            expected = None
        except TypeError as exc:
            expected = str(exc)
        try:
            assert d.dispatch({}, method, dict(args)) == 'ran', args
        except InvalidArguments as exc:
            assert expected is not None, (args, exc)
            assert exc.kwargs['reason'] == expected
        else:
            assert expected is None, args
