"""Prometheus metric names (prefix `ponder_`, units in names). Components own the collectors."""

QUERIES_TOTAL = "ponder_queries_total"  # labels: strategy, outcome
QUERY_LATENCY_SECONDS = "ponder_query_latency_seconds"  # histogram, labels: strategy
QUERY_TOKENS = "ponder_query_tokens"  # histogram of tokens per query, labels: strategy
BRANCHES_TOTAL = "ponder_branches_total"  # labels: event=launched|completed|cancelled|failed
BRANCHES_SAVED_TOTAL = "ponder_branches_saved_total"  # not launched thanks to early stopping
BRANCHES_REDELIVERED_TOTAL = "ponder_branches_redelivered_total"
SLO_ATTAINMENT_RATIO = "ponder_slo_attainment_ratio"
QUEUE_DEPTH_BRANCHES = "ponder_queue_depth_branches"
WORKER_SLOTS_IN_USE = "ponder_worker_slots_in_use"
WORKER_SLOTS = "ponder_worker_slots"
WORKER_JOBS_TOTAL = "ponder_worker_jobs_total"  # labels: outcome
WORKER_GENERATION_SECONDS = "ponder_worker_generation_seconds"
WORKER_TOKENS_TOTAL = "ponder_worker_tokens_total"  # labels: kind=prompt|completion
WORKER_DEADLETTERS_TOTAL = "ponder_worker_deadletters_total"  # labels: reason
WORKER_ANSWER_PROBES_TOTAL = "ponder_worker_answer_probes_total"
WORKER_EARLY_EXITS_TOTAL = "ponder_worker_early_exits_total"
WORKER_LOW_CONFIDENCE_STOPS_TOTAL = "ponder_worker_low_confidence_stops_total"
WORKER_TOKENS_AFTER_ANSWER_TOTAL = "ponder_worker_tokens_after_answer_total"
DESIRED_REPLICAS = "ponder_desired_replicas"  # operator, labels: namespace, name
ACTUAL_REPLICAS = "ponder_actual_replicas"  # operator: the worker Deployment's status.replicas
READY_REPLICAS = "ponder_ready_replicas"  # operator: its readyReplicas
SCALE_DECISIONS_TOTAL = "ponder_scale_decisions_total"  # labels: namespace, name, direction, cause
RECONCILE_SECONDS = "ponder_reconcile_seconds"  # operator histogram, labels: trigger
RECONCILE_ERRORS_TOTAL = "ponder_reconcile_errors_total"  # labels: trigger, error
OPERATOR_ACTIVE = "ponder_operator_active"  # 1: this replica reconciles; 0: a paused standby
AUTOSCALER_DEMAND_BRANCHES = "ponder_autoscaler_demand_branches"  # queued or running, per service
AUTOSCALER_BACKLOG_JOBS = "ponder_autoscaler_backlog_jobs"  # labels: namespace, name, state
AUTOSCALER_EXPECTED_BRANCH_TOKENS = "ponder_autoscaler_expected_branch_tokens"
AUTOSCALER_P95_LATENCY_SECONDS = "ponder_autoscaler_p95_latency_seconds"  # schedulers' worst
AUTOSCALER_SLO_TARGET_SECONDS = "ponder_autoscaler_slo_target_seconds"
AUTOSCALER_SLO_ATTAINMENT_RATIO = "ponder_autoscaler_slo_attainment_ratio"
RESULTS_MALFORMED_TOTAL = "ponder_results_malformed_total"  # scheduler: invalid branch results
LATE_TOKENS_TOTAL = "ponder_late_tokens_total"  # labels: kind; reported after their answer
PLANS_SHRUNK_TOTAL = "ponder_plans_shrunk_total"  # scheduler: fewer branches than asked
REQUESTS_REFUSED_TOTAL = "ponder_requests_refused_total"  # labels: code; 401, 403, 429 ...
TENANT_GENERATED_TOKENS_TOTAL = "ponder_tenant_generated_tokens_total"  # labels: tenant
# Test-time compute, per strategy (scheduler; ponder.scheduler.ttc says what each measures).
BRANCHES_TO_CONSENSUS = "ponder_branches_to_consensus"  # histogram
EARLY_STOPS_TOTAL = "ponder_early_stops_total"  # queries answered before their branch cap
TOKENS_SAVED_TOTAL = "ponder_tokens_saved_total"  # against the plan's maximum
TOKENS_BEFORE_FINAL_ANSWER = "ponder_tokens_before_final_answer"  # histogram
QUERY_TOKENS_AFTER_ANSWER = "ponder_query_tokens_after_answer"  # histogram, overthinking
CONFIDENCE_AT_STOP = "ponder_confidence_at_stop"  # histogram of the strategy's confidence
WORKER_CANCEL_TO_FREE_SECONDS = "ponder_worker_cancel_to_free_seconds"  # cancel -> engine freed
WORKER_ENGINE_UP = "ponder_worker_engine_up"  # 0 while the engine is down and no job is taken
