import pytest

from tests.threads import one_torch_thread

_one_thread = pytest.fixture(autouse=True, scope="module", name="_one_thread")(one_torch_thread)
