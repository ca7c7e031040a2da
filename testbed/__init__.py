"""The real things the tests and `make bench` run against: etcd and NATS servers, a 3FS mgmtd wire-format
peer, FUSE daemons, the local control plane of hack/cluster.py with Helm against it, and a fake Kubernetes
API for what a real server cannot be made to do (an HTTP 500, no answer)."""
