"""Look-ups: values that rules read from a CRM over HTTP, with a time budget, a cache and limits."""
