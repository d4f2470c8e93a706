"""Ponder workers: pull branch jobs from JetStream as slots free up and run them on vLLM.

Run with `python -m ponder.workers --config service.json`; `app.worker_app` is the factory.
"""
