"""A package so that pytest imports this tier's conftest.py as e2e.conftest: a
second top-level `conftest` would replace tests/conftest.py in sys.modules, and
every `from conftest import ...` after it would get the wrong one."""
