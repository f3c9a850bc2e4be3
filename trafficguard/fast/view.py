"""What a flow hook sees of a flow the C table owns: ``Flow``'s read API, read on access.

Hooks get a ``FastFlow`` where the Python table passes its ``Flow``: the same attribute
names (counters of the current interval, ``key``, ``label``, ``endpoints()``, ...), read
from the C slot when asked, so only flows a hook wants cost a Python object. After the
flow ends the view keeps its final values (the slot is reused).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from trafficguard.flow.classify import APP_LABELS
from trafficguard.flow.records import APP_SOURCES
from trafficguard.flow.state import AppCounter

if TYPE_CHECKING:
    from trafficguard.fast._core import Core, Row

_APPS: Final = tuple(AppCounter(label) for label in APP_LABELS)


class FastFlow:
    """A read-only view of one open flow in the C table (duck-types ``flow.state.Flow``)."""

    __slots__ = ("_core", "_final", "_slot")

    def __init__(self, core: Core, slot: int) -> None:
        self._core = core
        self._slot = slot
        self._final: Row | None = None

    def _row(self) -> Row:
        return self._final if self._final is not None else self._core.flow_info(self._slot)

    def freeze(self) -> None:
        """Keep the current values: the flow is ending and its slot will be reused."""
        self._final = self._core.flow_info(self._slot)

    @property
    def key(self) -> bytes:
        return self._row()[0]

    @property
    def a_is_src(self) -> bool:
        r = self._row()
        alen = len(r[8])
        return r[0][:alen] == r[8] and r[0][2 * alen : 2 * alen + 2] == r[9].to_bytes(2, "big")

    @property
    def seq(self) -> int:
        return self._row()[1]

    @property
    def first_ns(self) -> int:
        return self._row()[2]

    @property
    def start_ns(self) -> int:
        return self._row()[3]

    @property
    def last_ns(self) -> int:
        return self._row()[4]

    @property
    def packets_fwd(self) -> int:
        return self._row()[12]

    @property
    def packets_rev(self) -> int:
        return self._row()[13]

    @property
    def bytes_fwd(self) -> int:
        return self._row()[14]

    @property
    def bytes_rev(self) -> int:
        return self._row()[15]

    @property
    def l2_bytes_fwd(self) -> int:
        r = self._row()
        return r[14] - r[16]

    @property
    def l2_bytes_rev(self) -> int:
        r = self._row()
        return r[15] - r[17]

    @property
    def payload_fwd(self) -> int:
        return self._row()[18]

    @property
    def payload_rev(self) -> int:
        return self._row()[19]

    @property
    def flags_fwd(self) -> int:
        return self._row()[20]

    @property
    def flags_rev(self) -> int:
        return self._row()[21]

    @property
    def flags(self) -> int:
        r = self._row()
        return r[20] | r[21] << 8

    @property
    def tcp_state(self) -> int:
        return self._row()[22]

    @property
    def label(self) -> str:
        final = self._final
        index = final[23] if final is not None else self._core.flow_app(self._slot)
        return APP_LABELS[index]

    @property
    def app(self) -> AppCounter:
        """The label holder (``app.label``); its counters are not kept per label here."""
        return _APPS[self._row()[23]]

    @property
    def classify(self) -> int:
        """> 0 while payload packets are still inspected, -1 once a signature decided, else 0."""
        return self._row()[26]

    @property
    def app_source(self) -> str:
        return APP_SOURCES[self._row()[24]]

    @property
    def encap(self) -> int:
        return self._row()[25]

    @property
    def ip_version(self) -> int:
        return self._row()[6]

    def endpoints(self) -> tuple[bytes, int, bytes, int, int, int]:
        """``(src_addr, src_port, dst_addr, dst_port, proto, vlan)``, initiator first."""
        r = self._row()
        return r[8], r[9], r[10], r[11], r[7], r[5]

    def __repr__(self) -> str:  # no addresses in reprs: they end up in logs
        r = self._row()
        return (
            f"FastFlow(proto={r[7]}, app={APP_LABELS[r[23]]}, state={r[22]}, "
            f"packets={r[12]}+{r[13]})"
        )
