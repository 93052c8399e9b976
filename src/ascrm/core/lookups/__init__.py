"""Look-ups: values that rules read from a CRM over HTTP, with a time budget, a cache and limits.

request.py and source.py: what is asked and how; lookups.py: the engine (fetch.py, cache.py, limits.py,
shared.py); deciding.py: asking the rules again once each source they need is looked up; presets.py:
Bitrix24, amoCRM and RetailCRM; opened.py: the service's own.
"""
