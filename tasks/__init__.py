"""Reusable pyinfra deploys for an LVS-NAT balancer pair; each takes the cluster model."""
