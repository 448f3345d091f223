"""AdaSwitch (Sun et al., EMNLP 2024): step-level local-cloud switching with a calculator tool,
reflection on each step, and three training stages. See dacl/adaswitch/job.py."""
