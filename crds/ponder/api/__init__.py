"""Ponder's contracts: ReasoningService types, NATS wire messages, subjects and metric names.

Imported by the operator, the scheduler and the workers; imports none of them.
"""
