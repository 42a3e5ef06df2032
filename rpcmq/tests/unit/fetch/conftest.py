import pytest

from rpcmq.fetch import Fetcher


@pytest.fixture
def conf(image_conf):
    return image_conf


@pytest.fixture
def spool(conf):
    return conf.image.spool_dir


@pytest.fixture
def make_fetcher(conf):
    """make_fetcher(**image_overrides) -> a Fetcher on those options."""
    made = []

    def make(**overrides):
        for name, value in overrides.items():
            conf.set_override(name, value, 'image')
        made.append(Fetcher.from_conf(conf))
        return made[-1]

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def fetcher(make_fetcher):
    return make_fetcher()
