"""Test support: free ports, real etcd clusters, the etcd-required policy.

Import as ``from tests.support import etcd, ports, require`` (the repository
root is on sys.path under ``python -m pytest``; tests/conftest.py also makes
sure of it).
"""
