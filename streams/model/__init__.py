"""The configuration model: YAML loaders (runbooks, routing, receivers, silences, digests), matchers,
the severity / category taxonomy, event records and ids. Pure; imports nothing from core/, kafka/ or agents/.
"""
