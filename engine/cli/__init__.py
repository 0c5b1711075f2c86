"""The `raftnode` entry point: etcd's member flags -> a running member."""
