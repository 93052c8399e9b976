"""The tools of the people who write rules and run the service: test, simulate, probe, emulate."""
