"""A local Kubernetes control plane on loopback with fake GPU nodes (see local_cluster.py)."""
