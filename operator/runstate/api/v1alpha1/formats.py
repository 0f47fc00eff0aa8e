"""Field formats shared by the API types: patterns, bounds and the types built from them.

Owns the regular expressions the schema and the models check (DNS labels and subdomains, env var
names, image references, time zones, quantities, label keys and values), the bounds of
durations and scheduled years (`Seconds`, `PositiveSeconds`), and `param_env_name`, the env var
a Run parameter becomes. Must not define resource types or import the other modules of this
package; nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

# Operation names become label values and parts of pod names: keep them DNS-label shaped.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A service account name (a DNS subdomain, RFC 1123).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A container env var name as the API server accepts it (IsEnvVarName).
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# An image reference (the distribution reference grammar, without IPv6 registry hosts):
# [registry[:port]/]path[/path...][:tag][@digest].
_DOMAIN = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_PATH = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE = (
    rf"^({_DOMAIN}(:[0-9]+)?/)?{_PATH}(/{_PATH})*"
    r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# An IANA time zone name (`Europe/Berlin`, `Etc/GMT+5`, `America/Port-au-Prince`).
TIME_ZONE = r"^[A-Za-z][-A-Za-z0-9_+]*(/[-A-Za-z0-9_+]+)*$"
# A resource.Quantity (`500m`, `1.5Gi`, `2`, `1e3`); negative ones are no resource amount.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"

# Every duration of a spec, in seconds, is at most 10 years: far beyond any sensible wait, and
# far below what `datetime` arithmetic (year 9999) and a pod's activeDeadlineSeconds hold.
MAX_SECONDS = 315_360_000
# Scheduled times are between these years: a time plus any bounded duration stays a datetime.
MIN_YEAR, MAX_YEAR = 1970, 9000
# Label keys (`[prefix/]name`) and values, as a label selector of the Node LIST must have them.
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + LABEL_NAME + "$"
)
LABEL_VALUE = r"^(" + LABEL_NAME + r")?$"
# The prefix of the env var each Run parameter becomes.
PARAM_ENV_PREFIX = "RUNSTATE_PARAM_"
# The schema's side of the year bound of `scheduledTime` (format date-time checks the rest).
SCHEDULED_YEAR = r"^(19[7-9][0-9]|[2-8][0-9]{3})-"

Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_SECONDS)]


def param_env_name(name: str) -> str:
    """The env var a Run parameter becomes: non-alphanumerics become `_`, upper-cased."""
    return PARAM_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
