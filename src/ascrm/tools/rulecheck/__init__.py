"""The offline rule tools: rule tests (`ascrm test`), one call replayed (`ascrm simulate`), reports; on the core."""
