"""Reports: report.html of a run (:mod:`.page`, its sections registered in ``SECTIONS``), the
figures every command draws (:mod:`.figures`), the compare page and the sentences that say what
a result means. Report draws what the layers below computed; it never imports analysis."""
from lvmkit.report import timeseries as _timeseries  # noqa: F401  (adds the time-series sections)
from lvmkit.report import vmc as _vmc  # noqa: F401  (adds the VMC section)
from lvmkit.report.page import SECTIONS, write_report

__all__ = ["SECTIONS", "write_report"]
