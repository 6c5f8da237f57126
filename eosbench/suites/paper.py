"""The paper-shaped suites on CIFAR-10 (filled in below)."""
