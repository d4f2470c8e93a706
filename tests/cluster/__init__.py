"""A real local Kubernetes control plane for the e2e tests (see local_cluster.py)."""
