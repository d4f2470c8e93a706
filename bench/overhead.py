"""What Ponder's orchestration costs per branch, against raw JetStream (issue 2, "Benchmark").

    python -m bench.overhead [--queries 400] [--branches 16000] [--width 8 --k 4 --concurrency 32]

One run, one nats-server, and the same messages on both sides: `BranchJob`s of k branches
published with `Nats-Msg-Id` to a stream with the service's settings (`ponder.api.jetstream`),
fetched up to slots/k at a time by one pull consumer, answered with one results message per
job (the `BranchResults` shape) on the publisher's inbox, then acked.

1. Raw nats-py: a bare pull-consumer process (json in, json out, no validation, bookkeeping or
   strategy) and a bare publisher that counts the results per query. Latency: one job of one
   branch at a time. Throughput, two ways:
   - same shape: the Ponder workload below (`--concurrency` clients, each publishing one query
     of `--width` branches in jobs of `--k` and waiting for its results before the next): the
     like-for-like baseline, and the one the target is measured against;
   - burst: every job published at once, JetStream's best case (no client ever waits), for
     reference.
2. Ponder: the scheduler's real code path (planner, strategy, `QueryRunner`, `Dispatcher`) in
   this process, and a real worker process (`ponder.workers`) whose engine answers instantly
   (`InstantEngine`, a stub that exists for this benchmark only). Latency: sequential `single`
   queries, one branch each: plan -> job on JetStream -> worker fetch -> result -> strategy ->
   answer. Throughput: `--concurrency` queries at a time of `--width` branches in jobs of `--k`
   (`weighted-vote`: it waits for every branch and decides once, so the figure is the
   orchestration's, not a voting rule's).
3. HTTP: sequential `single` queries through the real scheduler process (`python -m
   ponder.scheduler`), i.e. 2. plus HTTP and FastAPI.

Prints p50/p99 latency per branch, branches/s, and the CPU time per branch of the client
(scheduler), worker and nats-server processes; then the overhead (Ponder p50 minus raw p50) and
the throughput ratios. Targets (issue 2): p50 overhead <= 2 ms per branch, Ponder throughput >=
half the raw one. On a shared 2-core machine the three processes compete for the cores, so the
CPU per branch is the steadier figure and the ratios move with the machine's load (printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ponder.api.jetstream import ensure_stream
from ponder.api.service_config import ServiceConfig, StrategyDefaults
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob, Endpoint, SamplingParams
from ponder.local.nats import nats_server
from ponder.local.processes import PYTHON, free_port, running
from ponder.local.scheduler import scheduler_process
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.dispatch import MSG_ID_HEADER, Dispatcher
from ponder.scheduler.load import LoadTracker
from ponder.scheduler.planner import Plan, QueryRequest, plan_query
from ponder.scheduler.runner import QueryRunner, RunnerDeps
from ponder.scheduler.strategies import make_strategy
from ponder.workers.engine import EngineHealth
from ponder.workers.generation import Generation

PROMPT = "Q:12+34-5 A:"
ANSWER = "12+34=46 46-5=41 #41"
SLOTS = 256

THROUGHPUT_STRATEGY = "weighted-vote"
WARMUP = 50


class InstantEngine:
    """Generates every branch at once (for this benchmark only), each with its own answer, so
    that self-consistency never stops early and every branch is accounted for."""

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        generation.prompt_tokens = len(job.prompt or "") + 1
        for index, choice in enumerate(generation.choices):
            text = f"{ANSWER}{index}"
            choice.text_parts.append(text)
            choice.completion_tokens = len(text)
            choice.finish_reason = "stop"

    async def health(self) -> EngineHealth:
        return EngineHealth()


@dataclass(frozen=True)
class Shape:
    """The throughput workload: concurrent queries of `width` branches in jobs of `k`."""

    width: int = 8
    k: int = 4
    concurrency: int = 32


@dataclass(frozen=True)
class Figures:
    name: str
    p50_ms: float | None  # None: a throughput-only row
    p99_ms: float | None
    branches_per_second: float | None
    client_cpu_us_per_branch: float | None = None  # the scheduler side (this process)
    worker_cpu_us_per_branch: float | None = None
    server_cpu_us_per_branch: float | None = None  # nats-server


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def bench_config(name: str, nats_url: str, k: int) -> ServiceConfig:
    return ServiceConfig(
        name=name,
        model="instant",
        nats_url=nats_url,
        slots_per_worker=SLOTS,
        strategy=StrategyDefaults(branches_per_job=k, temperature=0.7),
    )


# --- the worker processes ----------------------------------------------------------------


def read_config(path: Path) -> ServiceConfig:
    return ServiceConfig.model_validate_json(path.read_text())


def write_config(path: Path, config: ServiceConfig | None) -> None:
    """Write `config` to `path`, or remove `path` when None."""
    if config is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(config.model_dump_json())


async def run_ponder_worker(config_path: Path, nats_url: str, port: int) -> int:
    """A real Ponder worker whose engine is `InstantEngine`."""
    from ponder.workers.app import serve
    from ponder.workers.config import WorkerSettings

    service = read_config(config_path)
    settings = WorkerSettings(
        service=service,
        nats_url=nats_url,
        vllm_url="http://127.0.0.1:9",  # never called: the engine is instant
        worker_id="bench-worker",
        slots=SLOTS,
        http_host="127.0.0.1",
        http_port=port,
    )
    return await serve(settings, InstantEngine())


async def run_raw_worker(nats_url: str, stream: str, consumer: str, batch: int) -> int:
    """Fetch up to `batch` jobs at a time; for each, publish one results message (the shape of
    `BranchResults`, built with json.dumps) to the job's reply subject, then ack."""
    nc = await nats.connect(nats_url)
    subscription = await nc.jetstream().pull_subscribe_bind(durable=consumer, stream=stream)
    while True:
        try:
            messages = await subscription.fetch(batch=batch, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for message in messages:
            job = json.loads(message.data)
            results = [
                {
                    "schema_version": 1,
                    "query_id": job["query_id"],
                    "job_id": job["job_id"],
                    "branch_id": branch_id,
                    "status": "completed",
                    "text": ANSWER,
                    "finish_reason": "stop",
                    "completion_tokens": len(ANSWER),
                    "worker_id": "raw-worker",
                }
                for branch_id in job["branch_ids"]
            ]
            batch_message = {
                "schema_version": 1,
                "query_id": job["query_id"],
                "job_id": job["job_id"],
                "results": results,
            }
            await nc.publish(job["reply_subject"], json.dumps(batch_message).encode())
            await message.ack()


@contextlib.asynccontextmanager
async def worker_process(args: list[str], port: int | None = None) -> AsyncIterator[int]:
    """The worker subprocess; yields its pid."""
    command = [PYTHON, "-m", "bench.overhead", *args]
    async with running(command, port=port) as process:
        yield process.pid


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; this process when None)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listening_pid(port: int, program: str) -> int:
    """The pid of the `program` process started with `-p <port>` (the bench's nats-server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone, or not ours to read
        ours = args and Path(args[0]).name == program and "-p" in args
        if ours and args[args.index("-p") + 1 :][:1] == [str(port)]:
            return int(entry.name)
    raise LookupError(f"no {program} with -p {port}")


async def wait_for_pull_request(nc: NatsClient, subjects: ServiceSubjects) -> None:
    """Until a worker's pull request waits on the consumer (the worker is ready)."""
    js = nc.jetstream()
    for _ in range(300):
        info = await js.consumer_info(subjects.stream, subjects.consumer)
        if info.num_waiting > 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("no worker pulled from the consumer within 15 s")


# --- measurements ------------------------------------------------------------------------


class PonderBench:
    """The scheduler's query path, in this process."""

    def __init__(self, nc: NatsClient, config: ServiceConfig) -> None:
        self.config = config
        self.subjects = ServiceSubjects(config.namespace, config.name)
        self.dispatcher = Dispatcher(nc, self.subjects, "bench")
        self.load = LoadTracker()
        self.deps = RunnerDeps(dispatcher=self.dispatcher, model=config.model, load=self.load)
        self._count = 0

    def plan(self, strategy: str, branches: int) -> Plan:
        self._count += 1
        request = QueryRequest(
            query_id=f"q{self._count}",
            endpoint=Endpoint.COMPLETIONS,
            question=PROMPT,
            prompt=PROMPT,
            messages=None,
            ponder=PonderOptions(strategy=strategy, branches=branches),
            max_tokens=32,
        )
        plan = plan_query(request, self.config, self.load.snapshot(time.monotonic()))
        assert isinstance(plan, Plan), plan
        return plan

    async def query(self, strategy: str, branches: int) -> int:
        """Run one query; the number of branches that completed."""
        plan = self.plan(strategy, branches)
        outcome = await QueryRunner(plan, make_strategy(plan.query), self.deps).run()
        assert outcome.answer is not None, outcome.no_answer_detail
        return len(outcome.branches)

    async def latency(self, queries: int) -> list[float]:
        for _ in range(WARMUP):
            await self.query("single", 1)
        samples = []
        for _ in range(queries):
            started = time.perf_counter()
            await self.query("single", 1)
            samples.append(time.perf_counter() - started)
        return samples

    async def throughput(self, total_branches: int, shape: Shape) -> int:
        """Run concurrent queries until `total_branches` finished; the branches run."""
        queries = total_branches // shape.width
        remaining = queries

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                done = await self.query(THROUGHPUT_STRATEGY, shape.width)
                assert done == shape.width

        async with asyncio.TaskGroup() as clients:
            for _ in range(shape.concurrency):
                clients.create_task(client())
        return queries * shape.width


class RawBench:
    """The same job and results messages over bare nats-py JetStream: no planner, strategy,
    validation or bookkeeping; results are counted per query from their raw JSON."""

    def __init__(self, nc: NatsClient, config: ServiceConfig) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = ServiceSubjects(config.namespace, config.name)
        self.reply_subject = self.subjects.results("bench")
        self._waiting: dict[str, tuple[int, asyncio.Event]] = {}  # query id -> (missing, done)
        self._count = 0

    async def start(self) -> None:
        await self.nc.subscribe(self.reply_subject, cb=self._on_results)

    async def _on_results(self, msg: Msg) -> None:
        batch = json.loads(msg.data)
        query_id = batch["query_id"]
        missing, done = self._waiting[query_id]
        missing -= len(batch["results"])
        self._waiting[query_id] = (missing, done)
        if missing <= 0:
            done.set()

    def new_query(self, branches: int) -> tuple[str, asyncio.Event]:
        """A query id whose `branches` results are awaited on the returned event."""
        self._count += 1
        query_id = f"r{self._count}"
        done = asyncio.Event()
        self._waiting[query_id] = (branches, done)
        return query_id, done

    def job(self, query_id: str, first: int, branches: int) -> BranchJob:
        return BranchJob(
            query_id=query_id,
            job_id=f"{query_id}-j{first}",
            branch_ids=[f"{query_id}-{first + i}" for i in range(branches)],
            reply_subject=self.reply_subject,
            model="instant",
            prompt=PROMPT,
            sampling=SamplingParams(max_tokens=32, temperature=0.7),
            deadline_at=time.time() + 60,
        )

    async def publish(self, jobs: Sequence[BranchJob]) -> None:
        """Publish `jobs` at once with `Nats-Msg-Id` and wait for every PubAck."""
        acks = [
            await self.js.publish_async(
                self.subjects.jobs,
                job.model_dump_json().encode(),
                headers={MSG_ID_HEADER: job.job_id},
            )
            for job in jobs
        ]
        await asyncio.gather(*acks)

    async def query(self, width: int, k: int) -> None:
        """One query's worth of traffic: `width` branches in jobs of `k`, published at once,
        then wait for all their results."""
        query_id, done = self.new_query(width)
        await self.publish(
            [self.job(query_id, first, min(k, width - first)) for first in range(0, width, k)]
        )
        await done.wait()
        del self._waiting[query_id]

    async def latency(self, queries: int) -> list[float]:
        samples = []
        for index in range(WARMUP + queries):
            started = time.perf_counter()
            await self.query(1, 1)
            if index >= WARMUP:
                samples.append(time.perf_counter() - started)
        return samples

    async def throughput_shaped(self, total_branches: int, shape: Shape) -> int:
        """The Ponder workload's shape: `concurrency` clients, each sending one query of
        `width` branches (jobs of `k`) and waiting for its results before the next."""
        remaining = total_branches // shape.width

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self.query(shape.width, shape.k)

        async with asyncio.TaskGroup() as clients:
            for _ in range(shape.concurrency):
                clients.create_task(client())
        return total_branches // shape.width * shape.width

    async def throughput_burst(self, total_branches: int, shape: Shape) -> int:
        """Every job published at once (JetStream's best case: no client waits for anything
        but the last result)."""
        jobs = total_branches // shape.k
        query_id, done = self.new_query(jobs * shape.k)
        await self.publish([self.job(query_id, i * shape.k, shape.k) for i in range(jobs)])
        await done.wait()
        del self._waiting[query_id]
        return jobs * shape.k


async def http_latency(config: ServiceConfig, queries: int) -> list[float]:
    """Sequential `single` queries through the real scheduler process over HTTP."""
    async with (
        scheduler_process(config, scheduler_id="bench-http") as scheduler,
        aiohttp.ClientSession() as session,
    ):
        body = {
            "model": config.model,
            "prompt": PROMPT,
            "max_tokens": 32,
            "ponder": {"strategy": "single"},
        }
        samples = []
        for index in range(WARMUP + queries):
            started = time.perf_counter()
            async with session.post(f"{scheduler.base_url}/v1/completions", json=body) as reply:
                assert reply.status == 200, await reply.text()
                await reply.read()
            if index >= WARMUP:
                samples.append(time.perf_counter() - started)
        return samples


def figures(name: str, samples: Sequence[float] | None, rate: Rate | None = None) -> Figures:
    return Figures(
        name=name,
        p50_ms=statistics.median(samples) * 1000 if samples else None,
        p99_ms=percentile(samples, 0.99) * 1000 if samples else None,
        branches_per_second=rate.branches / rate.seconds if rate else None,
        client_cpu_us_per_branch=rate.client_cpu / rate.branches * 1e6 if rate else None,
        worker_cpu_us_per_branch=rate.worker_cpu / rate.branches * 1e6 if rate else None,
        server_cpu_us_per_branch=rate.server_cpu / rate.branches * 1e6 if rate else None,
    )


@dataclass(frozen=True)
class Rate:
    branches: int
    seconds: float
    client_cpu: float
    worker_cpu: float
    server_cpu: float


async def timed(run: Coroutine[Any, Any, int], worker_pid: int, server_pid: int) -> Rate:
    """Run a throughput measurement, with wall time and the three processes' CPU time."""
    started = time.perf_counter()
    client, worker, server = cpu_seconds(), cpu_seconds(worker_pid), cpu_seconds(server_pid)
    branches = await run
    return Rate(
        branches=branches,
        seconds=time.perf_counter() - started,
        client_cpu=cpu_seconds() - client,
        worker_cpu=cpu_seconds(worker_pid) - worker,
        server_cpu=cpu_seconds(server_pid) - server,
    )


async def measure(queries: int, total_branches: int, shape: Shape) -> list[Figures]:
    async with nats_server() as server, await nats.connect(server.url) as nc:
        ponder_config = bench_config("bench-ponder", server.url, shape.k)
        raw_config = bench_config("bench-raw", server.url, shape.k)
        js = nc.jetstream()
        server_pid = listening_pid(server.port, "nats-server")

        # Raw nats-py JetStream with the same messages, stream settings and fetch batch.
        raw_subjects = ServiceSubjects(raw_config.namespace, raw_config.name)
        await ensure_stream(js, raw_subjects, raw_config, max_workers=1)
        batch = str(max(1, SLOTS // shape.k))  # what the Ponder worker fetches when idle
        raw_args = ["raw-worker", server.url, raw_subjects.stream, raw_subjects.consumer, batch]
        async with worker_process(raw_args) as pid:
            await wait_for_pull_request(nc, raw_subjects)
            raw = RawBench(nc, raw_config)
            await raw.start()
            latency = await raw.latency(queries)
            shaped = await timed(raw.throughput_shaped(total_branches, shape), pid, server_pid)
            burst = await timed(raw.throughput_burst(total_branches, shape), pid, server_pid)
            results = [
                figures("raw JetStream, same shape", latency, shaped),
                figures("raw JetStream, burst", None, burst),
            ]

        # Ponder: a real worker process with the instant engine.
        subjects = ServiceSubjects(ponder_config.namespace, ponder_config.name)
        await ensure_stream(js, subjects, ponder_config, max_workers=1)
        config_path = Path(f"/tmp/ponder-bench-overhead-{server.port}.json")
        write_config(config_path, ponder_config)
        port = free_port()
        worker_args = ["ponder-worker", str(config_path), server.url, str(port)]
        try:
            async with worker_process(worker_args, port=port) as pid:
                await wait_for_pull_request(nc, subjects)
                ponder = PonderBench(nc, ponder_config)
                await ponder.dispatcher.start()
                latency = await ponder.latency(queries)
                rate = await timed(ponder.throughput(total_branches, shape), pid, server_pid)
                await ponder.dispatcher.stop()
                results.append(figures("ponder (scheduler path)", latency, rate))
                http = await http_latency(ponder_config, queries)
                results.append(figures("ponder over HTTP", http))
        finally:
            write_config(config_path, None)
        return results


def report(results: list[Figures], load_average: Sequence[float]) -> str:
    raw, burst, ponder, http = results
    lines = [
        f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'branches/s':>12}"
        f"{'CPU us/branch: client':>23}{'worker':>8}{'nats':>8}"
    ]

    def cell(value: float | None, spec: str) -> str:
        return format(value, spec) if value is not None else "-"

    for each in results:
        lines.append(
            f"{each.name:<28}{cell(each.p50_ms, '.3f'):>9}{cell(each.p99_ms, '.3f'):>9}"
            f"{cell(each.branches_per_second, ',.0f'):>12}"
            f"{cell(each.client_cpu_us_per_branch, '.1f'):>23}"
            f"{cell(each.worker_cpu_us_per_branch, '.1f'):>8}"
            f"{cell(each.server_cpu_us_per_branch, '.1f'):>8}"
        )
    assert raw.p50_ms and ponder.p50_ms and http.p50_ms
    assert raw.branches_per_second and burst.branches_per_second and ponder.branches_per_second
    lines += [
        f"p50 overhead per branch: {ponder.p50_ms - raw.p50_ms:.3f} ms (target <= 2 ms; HTTP "
        f"adds {http.p50_ms - ponder.p50_ms:.3f} ms per query)",
        f"throughput ratio ponder/raw (same shape): "
        f"{ponder.branches_per_second / raw.branches_per_second:.2f} (target >= 0.5)",
        f"throughput ratio ponder/raw (burst):      "
        f"{ponder.branches_per_second / burst.branches_per_second:.2f}",
        f"latency ratio p50 ponder/raw: {ponder.p50_ms / raw.p50_ms:.2f}; "
        f"load average before the run: {' '.join(f'{x:.2f}' for x in load_average)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ponder-worker"]:
        return asyncio.run(run_ponder_worker(Path(args[1]), args[2], int(args[3])))
    if args[:1] == ["raw-worker"]:
        return asyncio.run(run_raw_worker(args[1], args[2], args[3], int(args[4])))
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--queries", type=int, default=400, help="latency samples per path")
    parser.add_argument("--branches", type=int, default=16_000, help="branches per throughput run")
    parser.add_argument("--width", type=int, default=8, help="branches per throughput query")
    parser.add_argument("--k", type=int, default=4, help="branches per job")
    parser.add_argument("--concurrency", type=int, default=32, help="queries at once")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args(args)
    shape = Shape(options.width, options.k, options.concurrency)
    load_average = os.getloadavg()  # the machine is shared: note how busy it was
    results = asyncio.run(measure(options.queries, options.branches, shape))
    print(
        f"throughput workload: {shape.concurrency} concurrent {THROUGHPUT_STRATEGY} queries of "
        f"{shape.width} branches, {shape.k} per job; latency: sequential single-branch queries"
    )
    print(report(results, load_average))
    if options.json:
        options.json.write_text(json.dumps([asdict(each) for each in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
