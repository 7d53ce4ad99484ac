"""The search stage: pick the student for this teacher and this device.

stage.py           the entry point: budget, study, Pareto front, finalists measured on the device
space.py           the search space (built-in families and teacher-derived students)
proxies.py         scores computed without training (params, MACs, DisWOT, NASWOT, SynFlow)
engine.py          the Optuna study: trials, the Pareto front
latency_source.py  the target's latency table (predicted latency) for the search
"""
