"""A/B tests after the fact: ``aichat experiments report NAME`` (report.py) and its statistics
(stats.py). Assignment happens in the gateway (query_gateway/experiments.py)."""
