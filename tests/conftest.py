import pytest

from tests.harness import Proxy
from tests.upstreams import Upstream


@pytest.fixture
def upstreams():
    made = []

    def make(n=1, **kw):
        ups = [Upstream(name=f"up{i}", **kw) for i in range(len(made), len(made) + n)]
        made.extend(ups)
        return ups

    yield make
    for u in made:
        u.close()


@pytest.fixture
def proxy(tmp_path):
    started = []

    def start(config, **kw):
        p = Proxy(config, tmp_path, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.kill_all()
