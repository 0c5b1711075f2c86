"""Interoperability tests: our generated etcd API stubs and tools against the real etcd 3.4."""
