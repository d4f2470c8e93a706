"""The kwokctl configuration of the local control plane: loopback only, the ports given, and the
components' production rate limits and worker counts as flags on their command lines."""

from __future__ import annotations

import yaml

from ponder.local.cluster.local_cluster import PRODUCTION_ARGS, kwokctl_config


def test_the_config_binds_loopback_on_the_given_ports() -> None:
    config = yaml.safe_load(kwokctl_config({"kubeApiserverPort": 40001}))
    assert config["kind"] == "KwokctlConfiguration"
    assert config["options"]["bindAddress"] == "127.0.0.1"
    assert config["options"]["kubeApiserverPort"] == 40001


def test_the_controller_manager_and_scheduler_run_with_production_limits() -> None:
    patches = {
        patch["name"]: {arg["key"]: arg["value"] for arg in patch["extraArgs"]}
        for patch in yaml.safe_load(kwokctl_config({}))["componentsPatches"]
    }
    assert patches == PRODUCTION_ARGS
    manager = patches["kube-controller-manager"]
    # Above the defaults (20 requests/s, burst 30, 5 workers each) that queued a burst of
    # Deployments in the controller-manager's own client.
    assert int(manager["kube-api-qps"]) > 20 and int(manager["kube-api-burst"]) > 30
    assert int(manager["concurrent-deployment-syncs"]) > 5
    assert int(manager["concurrent-replicaset-syncs"]) > 5
    # kwokctl appends each as --key=value: values are strings, never YAML numbers.
    assert all(isinstance(value, str) for args in patches.values() for value in args.values())
