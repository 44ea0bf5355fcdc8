"""lvsha: an LVS-NAT balancer pair in failover, deployed with pyinfra from one cluster model."""

__version__ = "0.6.0"
