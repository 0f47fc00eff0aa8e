"""runstate: run deployments the pyinfra way, track runs the Prefect way, on Kubernetes."""

__version__ = "0.1.0"
