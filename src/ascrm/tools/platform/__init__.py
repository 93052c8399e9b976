"""The platform emulator: `ascrm probe` and `ascrm emulate` speak HTTP to a CRM endpoint as the platform does."""
