"""dacl: JAX-native training of small language models that collaborate with a cloud model."""
from setuptools import find_packages, setup

setup(
    name="dacl",
    version="0.1.0",
    description="Budgeted SLM-LLM collaboration and continual RL in JAX (DA-GRPO, AdaSwitch, Co-PLMs)",
    packages=find_packages(include=["dacl", "dacl.*"]),
    package_data={"dacl": ["data/fixtures/*.jsonl"]},
    python_requires=">=3.10",
    # Ranges around the known-good set (BUILD_NOTES.md, "Pins").
    install_requires=[
        "jax>=0.10.2,<0.11",
        "jaxlib>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml-collections>=1.1,<2",
        "absl-py>=2.1",
        "numpy>=2.0,<3",
        "safetensors>=0.8,<0.9",
        "gguf>=0.19,<0.20",
        "tokenizers>=0.22,<0.24",
        "transformers>=5.20,<6",
        "jinja2>=3.1",
        "reasoning-gym>=0.1.25,<0.2",
        "httpx>=0.28,<0.29",
        "starlette>=1.0,<2",
        "uvicorn>=0.54,<1",
        "tqdm>=4.66",
        "rich>=13",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "rouge-score>=0.1.2,<0.2",   # Co-PLMs: Rouge-L (the reference implementation's port)
    ],
    extras_require={
        # openai: tests talk to `dacl serve` with the official client, as users do
        "test": ["pytest>=8", "pytest-xdist>=3.5", "datasets>=5.2,<6", "openai>=3.40,<4"],
        # torch must already be installed as the local CPU file (`pip install torch==2.13.0`);
        # this range is satisfied by it and so pulls nothing more.
        # accelerate: transformers needs it to load a GGUF file (the independent GGUF oracle test)
        "torch": ["torch>=2.13,<2.14", "accelerate>=1.10,<2"],
        "tfds": ["tensorflow-datasets>=4.9"],
        "datasets": ["datasets>=5.2,<6"],
    },
    entry_points={"console_scripts": ["dacl=dacl.cli:main"]},
)
