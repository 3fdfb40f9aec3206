"""AT-TPC events (the 46Ar(p,p) experiment of the thesis): simulate, read, represent, convert.

::

    from lvmkit import attpc
    p = attpc.simulate("proton", 500, "sim/")            # needs pip install 'lvmkit[attpc]'
    c = attpc.simulate("carbon", 500, "sim/", noise_events=250)
    hot = attpc.simulate("proton", 500, "sim-hot/",      # MeV (total), Torr, V/m, T; progress on stderr
                         setup=attpc.AttpcSetup(beam_energy_mev=250.0, pressure_torr=25.0), progress=True)
    stats = attpc.convert([p, c], "attpc.h5", projection="xy")
    for event in attpc.read_spyral(p, min_points=50):     # real Spyral files read the same way
        image = attpc.project(event.points, "xy")         # (128, 128) float32 in [0, 1]

Only :func:`simulate` needs attpc-engine; reading and converting need h5py alone.
"""
from lvmkit.data.attpc import source as _source  # noqa: F401  (registers data.name = "attpc")
from lvmkit.data.attpc.convert import convert, read_labels
from lvmkit.data.attpc.project import DRIFT_LENGTH_MM, PLANES, align_azimuth, charge_value, log_charge, point_set, project, scale_charge
from lvmkit.data.attpc.simulate import REACTIONS, AttpcSetup, simulate
from lvmkit.data.attpc.spyral import BAD_REASONS, CLASS_NAMES, PAD_PLANE_RADIUS_MM, SpyralEvent, SpyralReader, read_spyral

__all__ = [
    "AttpcSetup", "BAD_REASONS", "CLASS_NAMES", "DRIFT_LENGTH_MM", "PAD_PLANE_RADIUS_MM", "PLANES", "REACTIONS",
    "SpyralEvent", "SpyralReader", "align_azimuth", "charge_value", "convert", "log_charge", "point_set", "project", "scale_charge", "read_labels", "read_spyral",
    "simulate",
]
