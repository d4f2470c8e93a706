"""Ponder on one machine, without Kubernetes: the local stack as real processes on loopback.

`python -m ponder.local up` serves a model through NATS, `vllm serve`, the workers, the
scheduler and a verifier; `python -m ponder.local config` prints the ServiceConfig the programs
read. The launchers behind them (`nats`, `vllm`, `scheduler`, `worker`, `verifier`, `dataplane`,
`stack`) are async context managers that start real processes and stop them on the way out;
`make demo`, the benchmarks and the integration tests use the same ones, and `cluster` is the
local Kubernetes control plane of the e2e tests (docs/architecture.md, "The local stack").
"""
