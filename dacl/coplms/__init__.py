"""Co-PLMs (Liu et al., WWW 2026): one cloud LLM and heterogeneous edge SLMs co-tuned through
distilled proxy models; only proxies travel. See dacl/coplms/job.py."""
