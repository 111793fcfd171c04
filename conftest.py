"""The root of the test suite: everything shared lives in the tests.support plugin."""

pytest_plugins = ["tests.support.plugin"]
