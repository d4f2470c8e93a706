"""`python -m ponder.local up`: the whole stack on this machine until Ctrl-C.

`plan_up` turns the options into an UpPlan (which model, which service config, which verifier
to start; no process yet), `serve` starts it through `ponder.local.stack.local_stack`, prints
where it listens and a `curl` and an `openai` line to try, and waits. Ctrl-C or SIGTERM (through
`ponder.local.interrupts.run_main`) and a part that fails to start all unwind the stack, which
stops every process it started.

The verifier: `--verifier MODULE` or `--verifier-command CMD` start one, `--no-verifier` none.
Without them, `up` starts the arithmetic step verifier when it serves the shipped model from a
checkout and the service config asks for an HTTP verifier (the shipped model's default config
does). The service's verifier URL is then pointed at the server started.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ponder.api.service_config import ServiceConfig, VerifierKind
from ponder.api.strategy import StrategyName
from ponder.local import shipped
from ponder.local.config_sources import (
    ConfigError,
    check_model_dir,
    load_reasoning_service,
    load_service_config,
    model_service_config,
)
from ponder.local.processes import PYTHON
from ponder.local.stack import LocalStack, local_stack
from ponder.local.verifier import ServerCommand, command_line, python_module_command
from ponder.local.vllm import vllm_installed

PROG = "python -m ponder.local"
GENERIC_PROMPT = "Question: What is 17 + 25? Answer:"
TRY_MAX_TOKENS = 48
TRY_BRANCHES = 8


@dataclass(frozen=True)
class ConfigSource:
    """Which of the three sources a ServiceConfig comes from (at most one file is set)."""

    config_file: Path | None = None
    rsvc_file: Path | None = None
    model_dir: Path | None = None
    nats_url: str | None = None


def resolve_config(source: ConfigSource) -> ServiceConfig:
    """The ServiceConfig of `source`: the JSON file, the ReasoningService, else the model's
    defaults; `nats_url` replaces the config's (a ReasoningService's spec.nats.url wins)."""
    if source.config_file is not None:
        config = load_service_config(source.config_file)
    elif source.rsvc_file is not None:
        if source.nats_url is None:
            return load_reasoning_service(source.rsvc_file)
        return load_reasoning_service(source.rsvc_file, source.nats_url)
    elif source.model_dir is not None:
        config = model_service_config(source.model_dir)
    else:
        raise ConfigError(
            "no model: give --model DIR, --config FILE or --from-rsvc YAML "
            "(the shipped model is in the repository checkout only)"
        )
    if source.nats_url is not None:
        config = config.model_copy(update={"nats_url": source.nats_url})
    return config


@dataclass(frozen=True)
class VerifierChoice:
    """The verifier options of `up`: at most one is set."""

    module: str | None = None
    command: str | None = None
    disabled: bool = False


@dataclass(frozen=True)
class UpPlan:
    """What `up` starts: vLLM on `model_dir` (or the one at `vllm_url`), `workers` workers, the
    `verifier` server if any, all serving `config`."""

    config: ServiceConfig
    model_dir: Path | None
    vllm_url: str | None
    workers: int
    verifier: ServerCommand | None
    vllm_args: tuple[str, ...]
    example_prompt: str


def choose_verifier(
    choice: VerifierChoice, model_dir: Path | None, config: ServiceConfig
) -> ServerCommand | None:
    """The verifier server to start (see the module docstring for the rule)."""
    if choice.disabled:
        return None
    if choice.module is not None:
        if not choice.module.strip():
            raise ConfigError("--verifier: give a Python module, e.g. models.arith.verifier_server")
        return python_module_command(choice.module.strip())
    if choice.command is not None:
        try:
            return command_line(choice.command)
        except ValueError as error:
            raise ConfigError(f"--verifier-command: {error}") from error
    serves_shipped = model_dir is not None and shipped.is_shipped_model(model_dir)
    if serves_shipped and config.strategy.verifier.kind is VerifierKind.HTTP:
        return shipped.verifier_command()
    return None


def plan_up(
    source: ConfigSource,
    *,
    workers: int,
    vllm_url: str | None,
    verifier: VerifierChoice,
    vllm_args: str = "",
) -> UpPlan:
    """Check the options and decide what to start; ConfigError says what to change."""
    model_dir = source.model_dir if source.model_dir is not None else shipped.shipped_model_dir()
    if model_dir is None and vllm_url is None:
        raise ConfigError(
            "--model DIR is required: this installation has no shipped model "
            "(models/ is in the repository checkout only)"
        )
    if source.model_dir is not None or vllm_url is None:
        assert model_dir is not None
        check_model_dir(model_dir)
    if vllm_url is None and not vllm_installed():
        raise ConfigError(
            "vLLM is not installed in this Python: install it (pip install vllm), "
            "or pass --vllm-url of a running vLLM server"
        )
    config = resolve_config(
        ConfigSource(source.config_file, source.rsvc_file, model_dir, source.nats_url)
    )
    try:
        extra = tuple(shlex.split(vllm_args))
    except ValueError as error:
        raise ConfigError(f"--vllm-args: {error}") from error
    serves_shipped = model_dir is not None and shipped.is_shipped_model(model_dir)
    return UpPlan(
        config=config,
        model_dir=None if vllm_url else model_dir,
        vllm_url=vllm_url,
        workers=workers,
        verifier=choose_verifier(verifier, model_dir, config),
        vllm_args=extra,
        example_prompt=shipped.EXAMPLE_PROMPT if serves_shipped else GENERIC_PROMPT,
    )


def try_options(config: ServiceConfig) -> dict[str, object]:
    """The `ponder` options of the request to try: self-consistency when the service allows
    it, else its default strategy."""
    if StrategyName.SELF_CONSISTENCY in config.strategy.allowed:
        branches = min(TRY_BRANCHES, config.strategy.max_branches)
        return {"strategy": StrategyName.SELF_CONSISTENCY.value, "branches": branches}
    return {"strategy": config.strategy.default.value}


def try_lines(
    openai_base_url: str, config: ServiceConfig, prompt: str, python: str = "python"
) -> list[str]:
    """A `curl` and a `python -c` command line (on the interpreter `python`, which needs the
    `openai` package) that ask the service one question (pure)."""
    options = try_options(config)
    body = {
        "model": config.model,
        "prompt": prompt,
        "max_tokens": TRY_MAX_TOKENS,
        "ponder": options,
    }
    curl = (
        f"curl -s {openai_base_url}/completions -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body))}"
    )
    code = (
        "from openai import OpenAI; "
        f"client = OpenAI(base_url={json.dumps(openai_base_url)}, api_key={json.dumps('unused')}); "
        f"response = client.completions.create(model={json.dumps(config.model)}, "
        f"prompt={json.dumps(prompt)}, max_tokens={TRY_MAX_TOKENS}, "
        f"extra_body={json.dumps({'ponder': options})}); "
        'print(response.choices[0].text, response.model_extra["ponder"])'
    )
    return [curl, f"{python} -c {shlex.quote(code)}"]


def interpreter_for_display(executable: str, cwd: Path) -> str:
    """`executable` relative to `cwd` when it lies below it (`.venv/bin/python`), else as is."""
    path = Path(executable)
    if path.is_absolute() and path.is_relative_to(cwd):
        return shlex.quote(str(path.relative_to(cwd)))
    return shlex.quote(executable)


def workers_text(workers: int) -> str:
    """`1 worker`, `2 workers`."""
    return f"{workers} worker" + ("" if workers == 1 else "s")


def ready_message(stack: LocalStack, plan: UpPlan, log_dir: Path, startup_seconds: float) -> str:
    """What `up` prints once everything is ready."""
    started = "" if plan.model_dir else " (not started here)"
    rows = [
        ("OpenAI base URL", stack.openai_base_url),
        ("scheduler", f"{stack.plane.base_url}  (/readyz, /metrics, /openapi.json)"),
        ("vLLM", f"{stack.vllm_url}{started}"),
        ("NATS", stack.nats_url),
    ]
    if stack.verifier_url:
        rows.append(("verifier", stack.verifier_url))
    rows.append(("logs", str(log_dir)))
    workers = workers_text(plan.workers)
    python = interpreter_for_display(PYTHON, Path.cwd())
    lines = [
        f"Ponder is serving {stack.served_name} with {workers}, ready in {startup_seconds:.0f}s.",
        *(f"  {label:<16} {value}" for label, value in rows),
        "",
        "Try it:",
        *try_lines(stack.openai_base_url, stack.config, plan.example_prompt, python),
        "",
        "Ctrl-C stops everything it started.",
    ]
    return "\n".join(lines)


START_ERRORS = (RuntimeError, TimeoutError, OSError, aiohttp.ClientError)


async def serve(plan: UpPlan, log_dir: Path) -> int:
    """Start the plan, print where it listens, and serve until cancelled; 1 if a part failed
    to start (everything started is stopped by then)."""
    parts = ["NATS", "vLLM" if plan.model_dir else None, "scheduler", workers_text(plan.workers)]
    if plan.verifier:
        parts.insert(0, "verifier")
    print(
        f"Starting {', '.join(p for p in parts if p)} (logs: {log_dir}) ...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    try:
        async with local_stack(
            plan.config,
            model_dir=plan.model_dir,
            vllm_url=plan.vllm_url,
            workers=plan.workers,
            verifier=plan.verifier,
            vllm_args=plan.vllm_args,
            log_dir=log_dir,
        ) as stack:
            message = ready_message(stack, plan, log_dir, time.monotonic() - started)
            print(message, flush=True)
            await asyncio.Event().wait()  # until Ctrl-C or SIGTERM cancel this task
    except START_ERRORS as error:
        print(
            f"{PROG} up: error: {error}; everything started was stopped (process logs: {log_dir})",
            file=sys.stderr,
        )
        return 1
    return 0
