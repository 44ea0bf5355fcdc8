"""pyinfra settings for deploy.py, loaded by pyinfra from the directory it runs in.

A run that cannot connect to, or prepare, every host changes none, and the first
failed operation stops the run: the pair is never left changed on one balancer
and stale on the other (the heartbeat restarts of the two balancers are separate
operations, the backup's first, so a failed one stops the run before the other).
"""

FAIL_PERCENT = 0
