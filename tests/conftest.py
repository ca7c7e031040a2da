import pytest

from tests.helm import HELM_MAJORS


@pytest.fixture(params=HELM_MAJORS, ids=lambda m: f"helm{m}")
def helm_major(request):
    return request.param
