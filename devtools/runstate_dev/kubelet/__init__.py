"""The process kubelet: scheduler and kubelet of the dev cluster, running pods as processes.

This package owns everything that happens to a pod after the API server accepted
it, the way kwok fakes nodes but with real processes, so that the operator
cannot tell it from a cluster with real nodes:

* **Scheduling.** A pod without ``spec.nodeName`` is bound to this kubelet's
  node through the ``pods/binding`` subresource, as kube-scheduler would.
* **Running.** Every bound, non-terminal pod (bound to *any* node name, so tests
  may create extra Node objects) gets its first container's ``command + args``
  run as a local process in its own process group: no image, cwd a fresh
  temporary directory, env = the container's ``env``/``envFrom`` (values,
  field refs, ConfigMap and Secret keys, ``$(VAR)`` expansion) plus
  ``PATH``/``HOME`` of the kubelet and ``HOSTNAME`` = pod name.  Other and init
  containers are not run.
* **Local images** (opt-in: ``--images DIR``, an image store of
  `runstate_dev.imagestore`). A container whose ``image`` the store holds runs
  as a runtime would run it (``runtime``): its root an overlay of the image's
  rootfs with a writable layer of its own (``readOnlyRootFilesystem`` makes it
  read-only), the machine's /proc and /sys, a /dev of its own, the kubelet's
  /etc/hosts, /etc/hostname and /etc/resolv.conf; argv from command/args and
  the image's Entrypoint/Cmd; env = the image's Env, HOME, HOSTNAME and the
  ``KUBERNETES_SERVICE_*`` variables (the API server's address), then the
  container's; the user from ``runAsUser``/``runAsGroup`` or the image's
  ``User``, ``runAsNonRoot`` checked against it; workingDir the container's or
  the image's; ``imageID`` the image's digest.  ``kubernetes.default.svc`` (and
  its shorter names) resolve, through /etc/hosts, to a loopback address whose
  port 443 is forwarded to the API server (``services``), so kopf's in-cluster
  login works as in a cluster.  Any other container runs as described above.
* **Probes.** ``readinessProbe`` and ``livenessProbe`` (httpGet, tcpSocket,
  exec), with the kubelet's thresholds (``probes``): readiness sets the Ready
  condition, a failed liveness probe stops the container, which restarts as its
  restartPolicy says.
* **Volumes and users** (when the kubelet runs as root, in a mount namespace of
  its own): the process starts in a private mount namespace whose root mirrors
  the machine's, with the pod's secret, configMap, downwardAPI, projected,
  emptyDir and hostPath volumes bind-mounted at their mountPath (``readOnly``,
  ``subPath``), and with ``runAsUser``/``runAsGroup``/``fsGroup``.  A volume
  that cannot be set up keeps the pod in ContainerCreating with a FailedMount
  event; ``runAsNonRoot`` without a user is a CreateContainerConfigError.
  hostPaths resolve in the pod's Node root: an overlay of the machine's ``/``
  per Node name, so a write through ``hostPath: /`` changes that Node only.
  The ``terminationMessagePath`` file is mounted too (its content becomes the
  termination message), and the hostname is the pod's name.
* **Status.** Real pod status through the status subresource: Running with
  ``startTime``, the four conditions and ``state.running``; then Succeeded or
  Failed with ``state.terminated`` (exit code, ``Completed``/``Error``, times,
  and with ``terminationMessagePolicy: FallbackToLogsOnError`` the last 80 lines
  / 4096 bytes of output as ``message``).  Death by signal N gives exit code
  128+N.  Like the real kubelet's status manager, which batches updates, a
  process that exits within ``FAST_EXIT_SECONDS`` of its start only gets the
  final status written (one write instead of two).
* **Logs** (``kubectl logs``): each container instance's output is kept as a CRI runtime keeps
  it, one file per instance with a timestamp per line (``logs``), next to the pod's whole
  output; with a serving certificate the kubelet serves the kubelet API's
  ``/containerLogs/{ns}/{pod}/{container}`` over HTTPS on a loopback port of its own, to the
  API server's client certificate only, and writes that port into its Node's status
  (``server``): follow, tailLines, limitBytes, timestamps, sinceSeconds/sinceTime and
  previous, with the real kubelet's errors.
* **activeDeadlineSeconds**, counted from ``startTime``: the process group is
  killed (SIGTERM, SIGKILL after the grace period) and the pod fails with
  ``reason: DeadlineExceeded``.
* **Ephemeral-storage eviction**, as the kubelet's eviction manager does it: a
  pod whose containers set ``resources.limits["ephemeral-storage"]`` has its
  local storage (the files under its working directory, standing in for the
  container's writable layer, plus its output log) measured every
  ``STORAGE_CHECK_SECONDS``.  Above the pod's limit (the sum over its
  containers) the process group is killed at once (the kubelet evicts with
  grace period 0) and the pod fails with ``reason: Evicted`` and the kubelet's
  message; the container ends terminated with exit code 137.
* **Deletion.** A pod with a ``deletionTimestamp`` gets SIGTERM, SIGKILL after
  its ``deletionGracePeriodSeconds``, a final status, and is then deleted with
  ``gracePeriodSeconds=0`` as a real kubelet finishes a graceful delete.  A pod
  removed outright (force delete) has its process group killed at once.
* **restartPolicy** ``Always`` (and ``OnFailure`` after a failure, a start error
  included): the container runs again in the same pod, at once the first time,
  then after the kubelet's back-off (10 s doubling to 5 min; meanwhile it waits
  in ``CrashLoopBackOff``), with ``restartCount`` and ``lastState``; its
  volumes are set up afresh (an emptyDir does not survive a restart).  The
  back-off is never reset.  ``Never``: the pod ends Succeeded or Failed.
* **Restarts of the kubelet.** Pods with a terminal phase are never re-run.  A
  pod found ``Running`` that this kubelet did not start lost its process with
  the previous kubelet; it is marked Failed with ``ContainerStatusUnknown``,
  exit code 137, as the real kubelet reports a container it cannot find.  On
  SIGTERM the kubelet kills every pod process it started.

Pods are watched with list + watch from the list's resourceVersion (bookmarks
on) and re-listed on 410 Gone; handling is level-triggered on the latest pod
object, so a re-list never loses an event.  The watch loop only dispatches:
processes, status writes, bindings and deletes run in per-pod tasks.

The modules, each with one job (its docstring says what it owns and must not do):

* ``informer``: list + watch of all pods, handing each pod object on;
* ``node``: ``ProcessKubelet``, the dispatch of each pod (bind, run, mark lost,
  finish a delete) and shutdown;
* ``binding``: binding unscheduled pods to the node;
* ``worker``: ``PodWorker``, one pod's lifecycle from its env to its final status;
* ``stop``: ``StopReason``, why a process is stopped and what that means for the pod;
* ``process``: the local process group, its directory, output and signals;
* ``launch``: the program between fork and exec (mount namespace, mounts, user);
* ``volumes``: the pod's volumes materialised, and the container's mounts;
* ``security``: the process's uid, gid and groups, and ``runAsNonRoot``;
* ``noderoot``: each Node's root filesystem, an overlay of the machine's;
* ``runtime``: what a runtime derives from a local image (argv, user, env, /etc files);
* ``services``: the ``kubernetes`` Service's stand-in for pods of local images;
* ``probes``: readiness and liveness probes;
* ``env``: the container's environment (``$(VAR)``, downward API, ConfigMaps, Secrets);
* ``status``: the status documents (Pending, Running, Succeeded/Failed);
* ``termination``: exit codes, ``state.terminated`` and the termination message;
* ``storage`` and ``quantity``: ephemeral-storage limits, usage and eviction;
* ``recovery``: pods left running by a previous kubelet;
* ``logs``: each container instance's output on disk, read back as ``kubectl logs`` asks;
* ``server``: the kubelet API (container logs) over HTTPS, and who may call it;
* ``api``: the API calls, errors and retries;  ``pod``: what they all share;
* ``command``: the ``kubelet`` verb and the process's lifetime.

This ``__init__`` only re-exports the names the dev tools, tests and benchmarks use.
"""

from .api import ApiCallError, PodApi
from .command import add_arguments, main, run_from_args, run_kubelet
from .env import ConfigError, expand, field_value
from .node import ProcessKubelet
from .quantity import format_quantity, parse_quantity
from .recovery import LOST_MESSAGE, LOST_REASON
from .status import running_status, terminal_status, waiting_status
from .stop import DEADLINE_MESSAGE, DEADLINE_REASON, EVICTED_REASON, StopReason
from .storage import EVICTED_STORAGE_MESSAGE, local_storage_bytes, pod_storage_limit
from .termination import output_tail
from .worker import PodWorker

__all__ = [
    "DEADLINE_MESSAGE",
    "DEADLINE_REASON",
    "EVICTED_REASON",
    "EVICTED_STORAGE_MESSAGE",
    "LOST_MESSAGE",
    "LOST_REASON",
    "ApiCallError",
    "ConfigError",
    "PodApi",
    "PodWorker",
    "ProcessKubelet",
    "StopReason",
    "add_arguments",
    "expand",
    "field_value",
    "format_quantity",
    "local_storage_bytes",
    "main",
    "output_tail",
    "parse_quantity",
    "pod_storage_limit",
    "run_from_args",
    "run_kubelet",
    "running_status",
    "terminal_status",
    "waiting_status",
]
