"""Locust load tests for the persistent-connection fan-out path (see loadtest/README.md).

Runs in its own virtualenv (`.venv-loadtest`, requirements/loadtest.txt), never in the app's.
"""
