"""runstate's dev cluster: a real local Kubernetes control plane whose pods are processes.

``build`` caches kube-apiserver/kube-controller-manager v1.20.2 built from
Debian's source, ``cluster.ControlPlane`` runs etcd + apiserver +
controller-manager + the process kubelet (``kubelet``) in a state dir,
``redis.RedisServer`` a throwaway Redis, and ``cli.main`` is the command line
(``python -m runstate_dev``, mounted as ``runstate dev``).
"""
