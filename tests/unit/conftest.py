"""Unit tests run against the strict fake kernel: no mount, mknod or ioctl of a
unit test ever reaches the real kernel (they run as root here), and a call the
fake does not model fails the test instead of passing silently."""

import pytest

from hutch.linux import kernel as K
from hutch.linux.fake import FakeKernel


@pytest.fixture(autouse=True)
def fake_kernel(monkeypatch):
    """The process-wide kernel (what ``kernel()`` returns) for the test."""
    k = FakeKernel()
    monkeypatch.setattr(K, "_kernel", k)
    return k
