"""Auth as etcd 3.4 does it: users, roles, key-range permissions, tokens.

  store.py      AuthStore: users/roles/permissions/enabled/revision in the
                member's SQLite db (tables in schema.py), etcd's rules and
                texts; permission checks (is_*_permitted)
  rangeperm.py  per-user merged key intervals: each check one binary search
  apply.py      AuthApplier: the store's mutations as apply handlers and the
                permission re-check at apply time (etcd's authApplierV3)
  tokens.py     simple tokens and JWT (--auth-token), AuthInfo
  password.py   bcrypt hashing, done by the proposer before the log
  errors.py     etcd's auth error texts and gRPC codes

Sits just below engine/mvcc (whose backend keeps its tables and whose applier
runs its hooks): imports engine/proto only (and grpc for status codes, bcrypt,
PyJWT).
"""
from .errors import AuthError
from .store import ROOT_ROLE, ROOT_USER, AuthStore
from .tokens import AuthInfo, SimpleTokens, new_token_provider

__all__ = ["AuthError", "AuthInfo", "AuthStore", "ROOT_ROLE", "ROOT_USER", "SimpleTokens",
           "new_token_provider"]
