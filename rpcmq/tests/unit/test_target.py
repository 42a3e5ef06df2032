from rpcmq import Target


def test_call_replaces_fields_and_keeps_the_rest():
    base = Target(topic='image', version='1.0')
    pinned = base(server='host-1', fanout=True)
    assert pinned.topic == 'image' and pinned.server == 'host-1'
    assert pinned.fanout is True and pinned.version == '1.0'
    assert base.server is None  # the original is untouched


def test_equal_targets_hash_alike():
    assert Target(topic='a', server='s') == Target(topic='a', server='s')
    assert len({Target(topic='a'), Target(topic='a')}) == 1
    assert Target(topic='a') != Target(topic='b')


def test_unknown_field_is_an_error():
    try:
        Target(topic='a')(sever='typo')
    except TypeError as exc:
        assert 'sever' in str(exc)
    else:
        raise AssertionError('typo accepted')
