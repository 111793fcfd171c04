"""Test support shared by every test folder, loaded as a pytest plugin (tests.support.plugin) by the root conftest."""
