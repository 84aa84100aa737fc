"""Tools for this machine, not for production: the local fleet (replicas behind
HAProxy, job workers), free ports, process groups and test databases, used by
`make fleet`, the tests, the benchmark and the load test."""
