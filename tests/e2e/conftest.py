"""The e2e tier's fixtures live in tests/conftest.py (the control plane `kube_cluster`, `kubectl`
and the chart release), shared with the chaos tier, which SIGKILLs the operator on it."""
