"""The tools of the people who write rules and run the service: the rule tools and the platform emulator."""
