"""The ServiceConfig of a ReasoningService (pure): what its scheduler and workers load.

The CRD speaks Kubernetes (CamelCase enums, percentages, millisecond integers); ServiceConfig
speaks the data plane's units (kebab-case strategy names, fractions, floats). This is the one
translation between them; render.py puts the result in the service's ConfigMap.
"""

from __future__ import annotations

from ponder.api.crd import (
    AuthType,
    DeepConfModeType,
    EarlyExitType,
    ExtractorType,
    LoadAdaptationType,
    ReasoningServiceSpec,
    StoppingRuleType,
    TokenConfidenceType,
    VerifierType,
)
from ponder.api.service_config import (
    AnswerProbe,
    ApiLimits,
    AuthConfig,
    AuthMode,
    BeamConfig,
    BudgetConfig,
    BudgetForcingConfig,
    DeepConfConfig,
    DeepConfMode,
    EarlyExit,
    EarlyExitConfig,
    ExtractorKind,
    LoadAdaptation,
    ServiceConfig,
    SloConfig,
    StoppingRule,
    StrategyDefaults,
    TokenConfidence,
    VerifierConfig,
    VerifierKind,
)
from ponder.api.strategy import StrategyName

KEYS_DIR = "/etc/ponder/auth"
KEYS_FILE = "keys.yaml"
KEYS_PATH = f"{KEYS_DIR}/{KEYS_FILE}"
"""Where the scheduler pods mount the spec.auth Secret's keys document."""

_VERIFIER_KINDS = {
    VerifierType.NONE: VerifierKind.NONE,
    VerifierType.LOGPROB: VerifierKind.LOGPROB,
    VerifierType.HTTP: VerifierKind.HTTP,
    VerifierType.REWARD_MODEL: VerifierKind.REWARD_MODEL,
    VerifierType.PROCESS_REWARD_MODEL: VerifierKind.PROCESS_REWARD_MODEL,
}
_EXTRACTOR_KINDS = {
    ExtractorType.AUTO: ExtractorKind.AUTO,
    ExtractorType.BOXED: ExtractorKind.BOXED,
    ExtractorType.HASHES: ExtractorKind.HASHES,
    ExtractorType.ANSWER_COLON: ExtractorKind.ANSWER_COLON,
    ExtractorType.ANSWER_IS: ExtractorKind.ANSWER_IS,
    ExtractorType.LAST_NUMBER: ExtractorKind.LAST_NUMBER,
    ExtractorType.REGEX: ExtractorKind.REGEX,
}

_EARLY_EXITS = {
    EarlyExitType.NONE: EarlyExit.NONE,
    EarlyExitType.ANSWER_PROBE: EarlyExit.ANSWER_PROBE,
}

_STOPPING_RULES = {
    StoppingRuleType.BETA: StoppingRule.BETA,
    StoppingRuleType.WINDOW: StoppingRule.WINDOW,
    StoppingRuleType.CONFIDENCE: StoppingRule.CONFIDENCE,
    StoppingRuleType.VERIFIER: StoppingRule.VERIFIER,
}
_DEEP_CONF_MODES = {
    DeepConfModeType.OFFLINE: DeepConfMode.OFFLINE,
    DeepConfModeType.ONLINE: DeepConfMode.ONLINE,
}

_TOKEN_CONFIDENCES = {
    TokenConfidenceType.SAMPLED_TOKEN: TokenConfidence.SAMPLED,
    TokenConfidenceType.TOP_K: TokenConfidence.TOP_K,
}

_LOAD_ADAPTATIONS = {
    LoadAdaptationType.STATIC: LoadAdaptation.STATIC,
    LoadAdaptationType.SHRINK: LoadAdaptation.SHRINK,
    LoadAdaptationType.SHRINK_AND_GROW: LoadAdaptation.SHRINK_AND_GROW,
}


def served_model_name(spec: ReasoningServiceSpec) -> str:
    """The model name clients send: servedName, else what vLLM would call it (name or path)."""
    return spec.model.served_name or spec.model.name or spec.model.path or "model"


def cold_start_hold_ms(spec: ReasoningServiceSpec) -> int:
    """How long a query that finds no worker may wait for one past its deadline: the spec's
    scaleToZero.holdSeconds while the pool may be at zero (minReplicas 0, whoever scales it),
    else 0, since a pool that should have workers and has none is an outage, not a cold start."""
    if spec.workers.min_replicas > 0:
        return 0
    return spec.autoscaling.scale_to_zero.hold_seconds * 1000


def service_config_from_spec(
    namespace: str,
    name: str,
    spec: ReasoningServiceSpec,
    nats_url: str,
    *,
    stream_replicas: int = 1,
) -> ServiceConfig:
    """The runtime configuration the scheduler and workers of this service load;
    `stream_replicas` is the operator's `--stream-replicas` (its NATS, not the spec, decides)."""
    strategy = spec.strategy
    verifier = strategy.verifier
    limits = spec.scheduler.limits
    return ServiceConfig(
        namespace=namespace,
        name=name,
        nats_url=spec.nats.url or nats_url,
        stream_replicas=stream_replicas,
        model=served_model_name(spec),
        max_model_len=spec.model.max_model_len,
        strategy=StrategyDefaults(
            default=StrategyName.from_crd(strategy.default),
            allowed=[StrategyName.from_crd(allowed) for allowed in strategy.allowed],
            branches=strategy.branches,
            max_branches=strategy.max_branches,
            branches_per_job=strategy.branches_per_job,
            confidence=strategy.confidence_percent / 100,
            give_up=strategy.give_up_percent / 100,
            stopping_rule=(
                None if strategy.stopping_rule is None else _STOPPING_RULES[strategy.stopping_rule]
            ),
            temperature=float(strategy.temperature),
            extractor=_EXTRACTOR_KINDS[strategy.extractor],
            answer_pattern=strategy.answer_pattern,
            verifier=VerifierConfig(
                kind=_VERIFIER_KINDS[verifier.type],
                url=verifier.url,
                model=verifier.model,
                timeout_seconds=float(verifier.timeout_seconds),
                accept_score=verifier.accept_score_percent / 100,
            ),
            beam=BeamConfig(
                width=strategy.beam.width,
                expansions=strategy.beam.expansions,
                step_delimiter=strategy.beam.step_delimiter,
                max_steps=strategy.beam.max_steps,
            ),
            budget_forcing=BudgetForcingConfig(
                min_thinking_tokens=strategy.budget_forcing.min_thinking_tokens,
                wait_token=strategy.budget_forcing.wait_token,
                answer_prompt=strategy.budget_forcing.answer_prompt,
                max_waits=strategy.budget_forcing.max_waits,
            ),
            deep_conf=DeepConfConfig(
                mode=_DEEP_CONF_MODES[strategy.deep_conf.mode],
                token_confidence=_TOKEN_CONFIDENCES[strategy.deep_conf.token_confidence],
                top_k=strategy.deep_conf.top_k,
                window_tokens=strategy.deep_conf.window_tokens,
                keep_percent=strategy.deep_conf.keep_percent,
                consensus=strategy.deep_conf.consensus_percent / 100,
            ),
            early_exit=EarlyExitConfig(
                default=_EARLY_EXITS[strategy.early_exit.default],
                probe=AnswerProbe(
                    every_tokens=strategy.early_exit.every_tokens,
                    window=strategy.early_exit.window,
                    cue=strategy.early_exit.cue,
                    probe_tokens=strategy.early_exit.probe_tokens,
                ),
            ),
        ),
        budget=BudgetConfig(
            default_tokens=spec.budget.default_tokens,
            max_tokens=spec.budget.max_tokens,
            max_tokens_per_branch=spec.budget.max_tokens_per_branch,
        ),
        slo=SloConfig(
            target_latency_ms=spec.slo.target_latency_milliseconds,
            attainment=spec.slo.attainment_percent / 100,
            max_deadline_ms=spec.slo.max_deadline_milliseconds,
            usage_settle_ms=spec.slo.usage_settle_milliseconds,
            cold_start_hold_ms=cold_start_hold_ms(spec),
            load_adaptation=_LOAD_ADAPTATIONS[spec.slo.load_adaptation],
        ),
        api=ApiLimits(
            max_body_bytes=limits.max_body_bytes,
            max_header_bytes=limits.max_header_bytes,
            max_headers=limits.max_headers,
            max_messages=limits.max_messages,
            max_stop_sequences=limits.max_stop_sequences,
            max_stop_chars=limits.max_stop_characters,
            request_timeout_seconds=float(limits.request_timeout_seconds),
        ),
        auth=(
            AuthConfig(mode=AuthMode.API_KEYS, keys_file=KEYS_PATH)
            if spec.auth.type is AuthType.API_KEYS
            else AuthConfig()
        ),
        slots_per_worker=spec.workers.slots_per_worker,
        job_max_deliver=spec.workers.max_deliveries,
        job_ack_wait_seconds=float(spec.workers.ack_wait_seconds),
    )
