"""A JetStream cluster: the URL lists clients take, the replicas streams get, and how local
cluster members are joined (the servers themselves run in tests/chaos)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import ponder.operator.__main__ as operator_main
from ponder.api.crd import ReasoningServiceSpec
from ponder.api.jetstream import stream_config
from ponder.api.nats_urls import nats_servers
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.local.nats import ClusterMember, NatsCluster
from ponder.operator.service_config import service_config_from_spec

SUBJECTS = ServiceSubjects("team-a", "math")


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("nats://127.0.0.1:4222", ["nats://127.0.0.1:4222"]),
        (
            "nats://a:4222,nats://b:4222,nats://c:4222",
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"],
        ),
        (" nats://a:4222 , tls://b:4222, ", ["nats://a:4222", "tls://b:4222"]),
        ("localhost:4222", ["localhost:4222"]),  # nats-py's own reading of a bare host:port
    ],
)
def test_a_nats_url_names_one_server_or_a_cluster_by_commas(url: str, servers: list[str]) -> None:
    assert nats_servers(url) == servers


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("", "empty"),
        (" , ", "empty"),
        ("nats://a:4222,http://b:80", "'http://b:80'"),
        ("nats://a:4222,nats://", "'nats://'"),
    ],
)
def test_a_nats_url_that_is_not_one_is_refused_naming_the_item(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        nats_servers(url)


def test_streams_keep_one_copy_unless_the_service_says_three() -> None:
    assert ServiceConfig(name="math", model="m").stream_replicas == 1
    assert stream_config(SUBJECTS).num_replicas == 1
    assert stream_config(SUBJECTS, replicas=3).num_replicas == 3


@pytest.mark.parametrize("replicas", [0, 6])
def test_stream_replicas_beyond_jetstreams_range_are_refused(replicas: int) -> None:
    with pytest.raises(ValidationError, match="stream_replicas"):
        ServiceConfig(name="math", model="m", stream_replicas=replicas)


def test_the_operators_stream_replicas_reach_every_services_config() -> None:
    spec = ReasoningServiceSpec.model_validate({"model": {"name": "m"}})
    config = service_config_from_spec("team-a", "math", spec, "nats://n:4222", stream_replicas=3)
    assert config.stream_replicas == 3
    assert service_config_from_spec("team-a", "math", spec, "nats://n:4222").stream_replicas == 1


@pytest.mark.parametrize(
    ("argv", "environ", "replicas"),
    [
        ([], {}, 1),
        ([], {"PONDER_STREAM_REPLICAS": "3"}, 3),
        (["--stream-replicas", "5"], {"PONDER_STREAM_REPLICAS": "3"}, 5),
    ],
)
def test_the_operator_takes_stream_replicas(
    argv: list[str], environ: dict[str, str], replicas: int
) -> None:
    assert operator_main.parse_args(argv, environ, started_at_ns=1).stream_replicas == replicas


@pytest.mark.parametrize("replicas", ["0", "7"])
def test_the_operator_refuses_stream_replicas_jetstream_cannot_keep(
    replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        operator_main.parse_args(["--stream-replicas", replicas], {}, started_at_ns=1)
    assert "--stream-replicas" in capsys.readouterr().err


def test_a_cluster_member_routes_to_every_member_under_the_cluster_name() -> None:
    member = ClusterMember("ponder", "nats-1", 6223, (6222, 6223, 6224))
    assert member.args() == [
        "--server_name",
        "nats-1",
        "--cluster_name",
        "ponder",
        "--cluster",
        "nats://127.0.0.1:6223",
        "--routes",
        "nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224",
    ]


def test_a_local_cluster_gives_clients_every_member_and_names_its_leaders(
    tmp_path: Path,
) -> None:
    cluster = NatsCluster(3, None, tmp_path)  # not started: no process runs here
    assert nats_servers(cluster.url) == cluster.urls
    assert len(set(cluster.urls)) == 3
    assert [member.server_name for member in cluster.members] == ["nats-0", "nats-1", "nats-2"]
    assert {member.route_ports for member in cluster.members} == {cluster.members[0].route_ports}
    assert cluster.index_of("nats-2") == 2
    with pytest.raises(ValueError, match="nats-9"):
        cluster.index_of("nats-9")
    with pytest.raises(ValueError, match="size=0"):
        NatsCluster(0, None, tmp_path)
