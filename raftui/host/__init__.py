"""Host mode: run the cluster's members as local processes (no UI here either)."""
from .base import ClusterHost, HostError
from .layout import ClusterLayout, default_data_dir
from .process_host import ProcessHost, etcd_host, raftnode_command, raftnode_host

__all__ = ["ClusterHost", "HostError", "ClusterLayout", "default_data_dir", "ProcessHost",
           "etcd_host", "raftnode_command", "raftnode_host"]
