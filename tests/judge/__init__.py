"""The etcdctl judge: the same etcdctl commands against real etcd and raftnode (see framework.py)."""
