"""Commands the dynamo-offloading chart runs in its hook Jobs and in the worker's resolve sidecar."""
