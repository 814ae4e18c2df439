"""The fault suite runs real daemons in their own processes, as tests/test_daemon.py does."""

from tests.test_daemon import cluster  # noqa: F401 (the fixture)
