"""Cloud LLM access: protocol, back-end registry, simulated cloud, host-side async bridge."""
from dacl.cloud.protocol import CloudLLM, CloudRequest, CloudResponse, make_cloud, register_cloud  # noqa: F401
from dacl.cloud import simulated  # noqa: F401  (registers "simulated")
