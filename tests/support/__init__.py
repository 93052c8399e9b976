"""What the tests share: real servers on loopback (ascrm, redis-server), certificates, metrics, waiting."""
